"""podgate's gunicorn worker: gthread, balanced across workers, and proof against slow clients.

**Balance.** The API server keeps a handful of keep-alive connections to a webhook and sends every
request over them. gunicorn leaves it to chance which worker accepts a connection (all workers poll
the same listening socket; whoever wakes first wins), and a busy worker tends to win again: often
one worker holds every connection and does all the work while the others idle, which halves the
throughput of two workers. ``SO_REUSEPORT`` only swaps that chance for a hash of the client port.
Here every worker publishes how many connections it holds in a small table shared across the fork,
and takes a new one only while it holds no more than the average. The worker holding the fewest
always qualifies, so a connection never waits for a slot; one that is over its share stops polling
the listening socket and looks again every ``RECHECK`` seconds.

**Slow clients.** In plain gthread a request thread does the TLS handshake and reads the headers
with blocking calls and no time limit: a few connections that send a byte now and then hold every
thread, and ``/healthz`` and the API server's calls go unanswered. Here the worker's event loop
does the handshake and collects the request head (and a Content-Length body) without blocking; a
thread only ever gets a request that is all there, so it never waits on a client. Each connection
has a deadline from its accept (from its first byte, for the next request on a kept-alive one):
``Limits.request_seconds`` for the handshake, the headers and the body together. A connection that
misses it is dropped. A worker holds at most ``Limits.connections`` connections; when a new one
arrives at the bound, the oldest connection that has not yet delivered a complete request makes
room, so the clients that send their requests whole (the API server, the kubelet's probes) are
served while the slow ones are dropped.

**Per request.** The API server's request (a whole, small ``POST /validate`` or ``/mutate`` of
JSON, in the plain shape lane.py reads) is answered by the event loop itself, as soon as it is
in: no hand-off to a thread and back (a queue, a future, a wake-up pipe, two GIL hand-offs), and
none of gunicorn's parser, WSGI environ and response object. The review never waits there (a
namespace whose labels are not cached goes to a thread, which may ask the API server), and an
answer the socket cannot take at once is finished by a thread. Every other request goes to the
thread pool as in gthread. The answer's head and body leave in one ``send`` (one TLS record, one
segment), not two; the heartbeat file that tells the master the worker is alive is touched at
most once a second, not once per request; a closed connection is closed at once, not drained on
the event loop.
"""

from __future__ import annotations

import errno
import gc
import mmap
import os
import re
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import selectors
from gunicorn import http, util
from gunicorn import sock as gsock
from gunicorn.http import wsgi
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import lane
from .budget import query_budget

RECHECK = 0.05  # seconds: how soon a worker over its share looks again
HEARTBEAT = 1.0  # seconds between touches of the heartbeat file (the master allows --worker-timeout)
HEAD_LIMIT = 64 * 1024  # a request head this long without its end goes to gunicorn's parser, which refuses it
RECV = 256 * 1024
# A whole request up to this size may be answered by the event loop itself: its answer is small
# enough to fit the socket's send buffer, nearly always.
INLINE_BYTES = 64 * 1024
CLOSE_LINGER = 0.5  # seconds a thread reads on after refusing a request it could not read whole
FREE = -1
_SLOT = struct.Struct("q")
# the Content-Length of a request head, lower-cased; gunicorn's parser checks it properly later
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*(?:\r\n|$)")

# WSGI environ keys: where a view finds its connection's deadline (a time.perf_counter() value),
# and the one a view sets when the connection cannot carry another request (its body could not
# be parsed, so where the next request would start is unknown).
DEADLINE_KEY = "podgate.deadline"
CLOSE_KEY = "podgate.close"


@dataclass(frozen=True)
class Limits:
    request_seconds: float = 10.0  # accept (or first byte) to complete request, per connection
    connections: int = 256  # per worker
    body_bytes: int = 3 * 1024 * 1024  # a Content-Length above this goes straight to the app (413)


def _query(head: bytes | bytearray) -> bytes:
    """The query string of a request head's target (b"" if it has none)."""
    line = bytes(head[:head.find(b"\r\n")])
    parts = line.split(b" ")
    return parts[1].partition(b"?")[2] if len(parts) == 3 else b""


class ConnectionTable:
    """Connections held per worker slot, in anonymous shared memory inherited by every fork."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._mem = mmap.mmap(-1, slots * _SLOT.size)
        self._view = memoryview(self._mem).cast("q")
        for i in range(slots):
            self._view[i] = FREE

    def claim(self, taken: set[int]) -> int:
        """A free slot for a worker about to be forked (the master calls this)."""
        for i in range(self.slots):
            if i not in taken:
                self._view[i] = 0
                return i
        raise RuntimeError(f"more than {self.slots} workers")

    def release(self, slot: int) -> None:
        self._view[slot] = FREE

    def set(self, slot: int, connections: int) -> None:
        self._view[slot] = connections

    def fair(self, slot: int) -> bool:
        """Whether the worker in ``slot`` holds no more than the average of the live workers."""
        mine, total, live = self._view[slot], 0, 0
        for count in self._view:
            if count >= 0:
                total += count
                live += 1
        return mine * live <= total


INCOMPLETE, WHOLE, FOR_A_THREAD = 0, 1, 2


def request_state(buffer: bytes | bytearray, body_limit: int) -> int:
    """Whether ``buffer`` holds a request: INCOMPLETE (wait for more), WHOLE (head and any
    Content-Length body are all here), or FOR_A_THREAD (a chunked body, or a head gunicorn will
    refuse: too long, or a length over the limit; the request thread reads or refuses the rest,
    bounded by the connection's deadline)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return FOR_A_THREAD if len(buffer) > HEAD_LIMIT else INCOMPLETE
    head = bytes(buffer[:end]).lower()
    if b"\r\ntransfer-encoding" in head:
        return FOR_A_THREAD
    found = _CONTENT_LENGTH.search(head)
    if found is None:
        return WHOLE
    length = int(found[1])
    if length > body_limit:
        return FOR_A_THREAD
    return WHOLE if len(buffer) - end - 4 >= length else INCOMPLETE


class Conn(TConn):
    """A client connection; while ``buffer`` is not None, the event loop is collecting its request."""

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any, deadline: float) -> None:
        super().__init__(cfg, sock, client, server)
        self.deadline = deadline
        self.handshaking = False
        self.head_done = False  # the buffer holds the whole request head
        self.buffer: bytearray | None = bytearray()
        # what the poller waits for on behalf of _collect (0: the socket is still registered as
        # kept alive, for on_client_socket_readable, which wants the same: saves two system calls)
        self.events = selectors.EVENT_READ


class CoalescedResponse(wsgi.Response):
    """gunicorn's response, holding the head back until the first body bytes, to send both at once."""

    _head = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        tosend = self.default_headers()
        tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])
        self._head = util.to_bytestring("%s\r\n" % "".join(tosend), "latin-1")
        self.headers_sent = True

    def _flush_head(self) -> bytes:
        head, self._head = self._head, b""
        return head

    def _emit_body(self, data: bytes) -> None:
        head = self._flush_head()
        if self.chunked:
            if head:
                self.sock.sendall(head)
            util.write_chunk(self.sock, data)
        else:
            self.sock.sendall(head + data if head else data)

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        if head := self._flush_head():
            self.sock.sendall(head)
        super().close()


class BalancedThreadWorker(ThreadWorker):
    """gthread, but balanced over the workers and with the request collected by the event loop."""

    table: ConnectionTable | None = None  # set in the master before the first fork
    slot: int | None = None  # set by the master's pre_fork hook
    limits = Limits()  # set in the master before the first fork

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held_back = False
        self._nr_conns = 0
        self._notified = 0.0
        self.collecting: dict[Conn, None] = {}  # connections whose request is not complete, oldest first
        self._next_deadline = float("inf")  # the earliest deadline in self.collecting, or later
        # (path, content type, body) -> (status line, body), or None: lane.py's requests answered
        # by the event loop (views.DirectAdmission.answer; None: every request goes to a thread)
        self._answer: Callable[[str, str, bytes], tuple[str, bytes] | None] | None = None
        # what the app does before the loop waits; it says how soon it wants to be called again
        self._idle: Callable[[], float | None] = lambda: None
        self._collect_when_idle = False  # the collector runs between requests, not in one
        self._field_limits = lane.FieldLimits()
        super().__init__(*args, **kwargs)

    # --- balance ---------------------------------------------------------------------------------

    @property  # type: ignore[override]
    def nr_conns(self) -> int:
        return self._nr_conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._nr_conns = value
        if self.table is not None and self.slot is not None:
            self.table.set(self.slot, value)

    def _fair(self) -> bool:
        return self.table is None or self.slot is None or self.table.fair(self.slot)

    def set_accept_enabled(self, enabled: bool) -> None:
        self._held_back = enabled and not self._fair()
        super().set_accept_enabled(enabled and not self._held_back)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._held_back:
            timeout = min(timeout, RECHECK)
        if self.collecting:
            timeout = max(0.0, min(timeout, self._next_deadline - time.perf_counter()))
        if (again := self._idle()) is not None:
            timeout = min(timeout, again)
        if self._collect_when_idle:
            collect_garbage()
        super().wait_for_and_dispatch_events(timeout)

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._notified >= HEARTBEAT:
            self._notified = now
            super().notify()

    # --- collecting requests in the event loop ---------------------------------------------------

    def accept(self, listener: Any) -> None:
        if not self._fair():
            self.set_accept_enabled(True)  # re-evaluated: stops polling the listener
            return
        try:
            client, addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        if self.nr_conns >= self.limits.connections and not self._make_room():
            util.close(client)  # every connection is busy with a complete request: none is slow
            return
        self.nr_conns += 1
        if client.family in (socket.AF_INET, socket.AF_INET6):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the answer goes out at once
        conn = Conn(self.cfg, client, addr, listener.getsockname(),
                    time.perf_counter() + self.limits.request_seconds)
        try:
            if self.cfg.is_ssl:
                conn.sock = gsock.ssl_wrap_socket(client, self.cfg)  # no handshake yet (do_handshake_on_connect)
                conn.handshaking = True
            conn.sock.setblocking(False)
        except (OSError, ValueError) as e:
            self.log.warning("could not set up TLS for a connection: %s", e)
            self._drop(conn, registered=False)
            return
        self._start_collecting(conn, register=True)

    def _start_collecting(self, conn: Conn, register: bool) -> None:
        """``register``: with the poller, for ``_collect``; else the socket stays registered as a
        kept-alive one, and ``_collect`` changes that only if the request is not all in yet."""
        conn.head_done = False
        self.collecting[conn] = None
        self._next_deadline = min(self._next_deadline, conn.deadline)
        conn.events = selectors.EVENT_READ if register else 0
        if register:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._collect, conn))

    def on_client_socket_readable(self, conn: Conn, client: Any) -> None:
        """A kept-alive connection has its next request coming: collect it, with a fresh deadline."""
        self.keepalived_conns.remove(conn)
        conn.deadline = time.perf_counter() + self.limits.request_seconds
        conn.buffer = bytearray(conn.parser.unreader.take_buffered())
        self._start_collecting(conn, register=False)
        self._collect(conn, conn.sock)

    def _collect(self, conn: Conn, _fileobj: Any) -> None:
        """Advance the handshake and read what has arrived, without blocking; hand a complete request on."""
        buffer = conn.buffer
        assert buffer is not None
        want = selectors.EVENT_READ
        try:
            if conn.handshaking:
                conn.sock.do_handshake()
                conn.handshaking = False
            while not (state := request_state(buffer, self.limits.body_bytes)):
                self._head_arrived(conn)
                data = conn.sock.recv(RECV)
                if not data:
                    self._drop(conn)  # closed before its request was complete
                    return
                buffer += data
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLWantWriteError:
            want = selectors.EVENT_WRITE
        except BlockingIOError:
            pass
        except (OSError, ValueError):  # ssl.SSLError is an OSError: a bad handshake, a reset
            self._drop(conn)
            return
        except Exception:  # noqa: BLE001  (the event loop serves every connection: it must go on)
            self.log.exception("collecting a request failed")
            self._drop(conn)
            return
        else:
            self._dispatch(conn, whole=state == WHOLE)
            return
        if want != conn.events:
            conn.events = want
            self.poller.modify(conn.sock, want, partial(self._collect, conn))

    def _head_arrived(self, conn: Conn) -> None:
        """Once the head is in, the body gets what the request's query allows (never more)."""
        if conn.head_done or conn.buffer is None or (end := conn.buffer.find(b"\r\n\r\n")) < 0:
            return
        conn.head_done = True
        budget = query_budget(_query(conn.buffer[:end + 2]), self.limits.request_seconds)
        if budget < conn.deadline - time.perf_counter():
            conn.deadline = time.perf_counter() + budget
            self._next_deadline = min(self._next_deadline, conn.deadline)

    def _dispatch(self, conn: Conn, whole: bool = False) -> None:
        """Hand the request on: answered right here if it is the API server's (see lane.py), to
        the thread pool otherwise."""
        buffer, conn.buffer = conn.buffer, None
        del self.collecting[conn]
        if conn.parser is None:  # once per connection: its read-ahead outlives each request
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True
        if whole and self._answer_here(conn, buffer):
            return
        self.poller.unregister(conn.sock)
        conn.sock.setblocking(True)
        conn.parser.unreader.unread(bytes(buffer))
        conn.data_ready = True
        self.enqueue_req(conn)

    def _answer_here(self, conn: Conn, buffer: bytearray) -> bool:
        """Answer a request lane.py reads, on the event loop, if the connection then stays open as
        gunicorn would keep it (False: nothing was sent, a thread serves the request)."""
        if self._answer is None or len(buffer) > INLINE_BYTES or not self.alive or not self.cfg.keepalive \
                or len(self.keepalived_conns) >= self.max_keepalived or self.nr + 1 >= self.max_requests:
            return False
        request = lane.parse(buffer, self._field_limits)
        answer = None if request is None else self._answer(request.path, request.content_type, request.body)
        if answer is None:
            return False
        self.nr += 1
        data = lane.response(*answer)
        try:
            sent = conn.sock.send(data)
        except (ssl.SSLWantWriteError, BlockingIOError):
            sent = 0
        except (OSError, ValueError):
            self._drop(conn)
            return True
        if sent < len(data):  # the client is slow to read: a thread sends the rest
            self.poller.unregister(conn.sock)
            fs = self.tpool.submit(self._send_rest, conn, data[sent:])
            fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))
            return True
        conn.set_timeout()
        self.keepalived_conns.append(conn)
        if conn.events:
            self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
        return True

    def _send_rest(self, conn: Conn, rest: bytes) -> bool:
        """(A thread) the rest of an answer, within the connection's time (True: keep it open)."""
        conn.sock.settimeout(self.limits.request_seconds)
        conn.sock.sendall(rest)
        conn.sock.settimeout(None)
        return True

    def _drop(self, conn: Conn, registered: bool = True) -> None:
        self.collecting.pop(conn, None)
        if registered:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        self.nr_conns -= 1
        close_now(conn.sock)

    def _make_room(self) -> bool:
        """At the connection bound: drop the oldest connection still sending its request, else the
        longest idle kept-alive one (False: neither exists)."""
        if self.collecting:
            self._drop(next(iter(self.collecting)))
            return True
        if self.keepalived_conns:
            self._drop(self.keepalived_conns.popleft())
            return True
        return False

    def murder_pending(self) -> None:
        """gthread's, and the connections past their deadline: one with its head in goes to a thread,
        which answers 408 at once (the app sees the deadline passed); any other is dropped."""
        super().murder_pending()
        now = time.perf_counter()
        if now < self._next_deadline:
            return
        self._next_deadline = float("inf")
        for conn in list(self.collecting):
            if conn.deadline > now:
                self._next_deadline = min(self._next_deadline, conn.deadline)
            elif conn.head_done:
                self._dispatch(conn)
            else:
                self._drop(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gthread's, but a request already read ahead (pipelined) is collected like any other, and a
        connection that is done is closed at once.

        gthread lingers on the event loop for up to 2 s per closed connection, draining what the
        client still sends (every other connection waits meanwhile), and counts the connection out
        twice when that close fails (a socket the thread already closed), which skews the balance.
        """
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:  # noqa: BLE001  (whatever the thread raised, the connection is done)
            result = False
        if result is not True:
            self.nr_conns -= 1
            close_now(conn.sock)
        elif self.alive and isinstance(conn, Conn) and conn.parser.unreader.buf.getbuffer().nbytes:
            conn.sock.setblocking(False)
            conn.deadline = time.perf_counter() + self.limits.request_seconds
            conn.buffer = bytearray(conn.parser.unreader.take_buffered())
            self._start_collecting(conn, register=True)
            self._collect(conn, conn.sock)
        else:
            super().finish_request(conn, fs)  # back to the poller, kept alive

    def run(self) -> None:
        app = getattr(self.wsgi, "wsgi_app", None)
        # the event loop answers only what needs nothing lane.py leaves out of a request
        if self.cfg.proxy_protocol == "off" and getattr(self.cfg, "protocol", "http") == "http" \
                and not os.environ.get("SCRIPT_NAME") \
                and not self.log.access_log_enabled and hasattr(app, "answer"):
            self._answer = app.answer
            self._idle = app.idle
            self._collect_when_idle = gc.isenabled()
            gc.disable()
        self._field_limits = lane.FieldLimits.of(self.cfg)
        try:
            super().run()
        finally:
            self._idle()  # what the event loop answered last is reported too
            for conn in self.collecting:
                conn.close()
            self.collecting.clear()

    # --- serving a request (in a thread) --------------------------------------------------------

    def handle_request(self, req: Any, conn: Any) -> bool:
        """gthread's, with a response that sends head and body together and the deadline in the environ."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg,
                                        response_class=CoalescedResponse)
            environ["wsgi.multithread"] = True
            if isinstance(conn, Conn):
                environ[DEADLINE_KEY] = conn.deadline
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                if self.log.access_log_enabled:
                    self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if environ.get(CLOSE_KEY):
                # the client may still be sending: read on briefly, so that closing does not make
                # the kernel reset the connection and throw away the answer before it is read
                util.close_graceful(conn.sock, timeout=CLOSE_LINGER, max_drain=self.limits.body_bytes)
                return False
            if resp.should_close():
                return False
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp and resp.headers_sent:
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True


def collect_garbage() -> None:
    """What the collector would have done by now, as its thresholds say, run at a moment of our
    choosing: a collection in the middle of a request (every few requests, as a parsed
    AdmissionReview allocates thousands of objects) adds its pause to that request."""
    young, middle, old = gc.get_count()
    every_young, every_middle, every_old = gc.get_threshold()
    if young < every_young:
        return
    gc.collect(2 if middle >= every_middle and old >= every_old else 1 if middle >= every_middle else 0)


def close_now(sock: Any) -> None:
    """Close without waiting: send FIN, discard what the client has already sent (so the kernel
    does not answer it with a reset that could cut off our last answer), close."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)  # the raw socket: an SSLSocket would drop its state
        for _ in range(16):
            if not socket.socket.recv(sock, RECV, socket.MSG_DONTWAIT):
                break
    except (OSError, ValueError):
        pass
    util.close(sock)


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn hook (master): give the new worker a slot in the connection table."""
    table = BalancedThreadWorker.table
    if table is not None and isinstance(worker, BalancedThreadWorker):
        taken = {w.slot for w in server.WORKERS.values() if getattr(w, "slot", None) is not None}
        worker.slot = table.claim(taken)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (master): a dead worker's connections are gone; free its slot."""
    table = BalancedThreadWorker.table
    if table is not None and getattr(worker, "slot", None) is not None:
        table.release(worker.slot)
