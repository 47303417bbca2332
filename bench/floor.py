"""The floor: the cheapest admission webhook the standard library can serve, as its own process.

    python bench/floor.py --port 8444 --cert tls.crt --key tls.key

``http.server`` over ``ssl``, one thread per connection, HTTP/1.1 keep-alive, ``TCP_NODELAY``;
every POST is parsed as an AdmissionReview and answered "allowed" with its uid, in one write.
Nothing else: no policy, no log line, no metrics. What podgate costs beyond this is the price of
its serving stack and its rules together, measured against what any webhook must do. It imports
nothing from podgate, so nothing podgate does can slow it down.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AllowAll(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server uses it
    disable_nagle_algorithm = True  # TCP_NODELAY

    def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            review = json.loads(body)
            answer = {"apiVersion": review["apiVersion"], "kind": "AdmissionReview",
                      "response": {"uid": review["request"]["uid"], "allowed": True}}
            status, payload = 200, json.dumps(answer, separators=(",", ":")).encode()
        except (ValueError, KeyError, TypeError):
            status, payload = 400, b'{"error":"not an AdmissionReview"}'
        self.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, b"OK" if status == 200 else b"Bad Request", len(payload), payload))

    def do_GET(self) -> None:  # noqa: N802
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.cert, args.key)
    server = ThreadingHTTPServer((args.host, args.port), AllowAll)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"floor webhook listening on https://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
