"""Command-line values checked where they are parsed, so that a bad one is one line naming it.

Every option that takes a number, an address, a name or a path goes through one of these types:
argparse then reports ``podgate serve: error: argument --bind: ...`` and exits 2, before any
work starts (no traceback from deep inside gunicorn or ``cryptography``, no server announced that
cannot bind). ``Parser`` keeps those errors to one line, shows the subcommand's own usage for a
mistyped option, and suggests the nearest choice, command or option.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

from ..errors import PodgateError

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class UsageError(PodgateError):
    """Bad input or usage found while a command runs: printed on stderr, exit code 2."""


def suggestion(word: str, choices: Iterable[str]) -> str:
    """``; did you mean "x"?`` for the nearest of ``choices`` (empty when none is near)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


class Parser(argparse.ArgumentParser):
    """argparse with errors a person can act on (see the module docstring)."""

    def error(self, message: str) -> NoReturn:
        found = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if found:
            choices = re.findall(r"'([^']*)'", found[3])
            message = (f"argument {found[1]}: invalid choice {found[2]!r}{suggestion(found[2], choices)} "
                       f"(choose from {', '.join(choices)})")
        if message.startswith("argument "):  # a bad value: the line names the option, usage would bury it
            sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
            raise SystemExit(2)
        super().error(message)

    def unrecognized(self, extras: list[str]) -> NoReturn:
        """Unknown arguments of this (sub)command: its usage, and the nearest option it has."""
        options = [s for action in self._actions for s in action.option_strings]
        hints = [suggestion(word.split("=", 1)[0], options) for word in extras if word.startswith("-")]
        hint = next((h for h in hints if h), "")
        super().error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def integer(low: int, high: int) -> Callable[[str], int]:
    """A whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {text[:40]!r}") \
                from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def seconds(low: float, high: float, allow_low: bool = True) -> Callable[[str], float]:
    """A finite number of seconds in [low, high] (or (low, high] without ``allow_low``)."""
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        bound = "from" if allow_low else "above"
        if not math.isfinite(value) or not (low <= value if allow_low else low < value) or value > high:
            raise argparse.ArgumentTypeError(f"expected seconds {bound} {low:g} to {high:g}, got {text[:40]!r}")
        return value

    parse.__name__ = "seconds"
    return parse


def host_port(allow_any_port: bool) -> Callable[[str], str]:
    """``HOST:PORT`` (``[IPv6]:PORT``), the port 1-65535 (or 0, the kernel's pick, where allowed)."""
    low = 0 if allow_any_port else 1

    def parse(text: str) -> str:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:8443), got {text!r}")
        if not low <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"port must be from {low} to 65535, got {int(port)}")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if ":" in bare and host == bare:
            raise argparse.ArgumentTypeError(f"an IPv6 address goes in brackets: [{host}]:{port}")
        if not _is_ip(bare) and not is_dns_name(bare):
            raise argparse.ArgumentTypeError(f"{host!r} is neither an IP address nor a host name")
        return f"{host}:{int(port)}"

    parse.__name__ = "address"
    return parse


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_dns_name(name: str, wildcard: bool = False) -> bool:
    """An RFC 1123 host name (labels of letters, digits and inner hyphens, 253 characters at most);
    with ``wildcard``, ``*.`` may lead it, as in a certificate's subject alternative names."""
    if wildcard and name.startswith("*."):
        name = name[2:]
    labels = name.rstrip(".").split(".")
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def dns_label(text: str) -> str:
    """A Kubernetes name of a Namespace or Service (RFC 1123 label: a-z, 0-9, '-', 63 at most)."""
    if not _LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text[:70]!r} is not a valid name: lower-case letters, digits and "
                                         "'-', starting and ending with a letter or digit, 63 at most")
    return text


def san(text: str) -> str:
    """A name for a certificate: an IP address or a DNS name (``*.`` allowed in front)."""
    if not _is_ip(text) and not is_dns_name(text, wildcard=True):
        raise argparse.ArgumentTypeError(f"{text[:70]!r} is neither an IP address nor a DNS name "
                                         "(letters, digits, inner '-', dots; '*.' only in front)")
    return text


def existing_file(text: str) -> str:
    """A regular file that exists and can be opened for reading."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot read (permission denied)")
    return text


def existing_dir(text: str) -> str:
    """A directory that exists and can be listed."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot read (permission denied)")
    return text


def existing_path(text: str) -> str:
    """A file or a directory that exists."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return text


def output_dir(option: str, path: str | Path) -> Path:
    """Make sure ``path`` is a directory files can be written into (making it if needed)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{option} {path}: exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the directory: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write there (permission denied)")
    return path


def kube_api(text: str) -> str:
    """Where namespace labels come from: ``in-cluster``, ``kubeconfig``, or an http(s) URL."""
    if text in ("in-cluster", "kubeconfig"):
        return text
    scheme, sep, rest = text.partition("://")
    host = rest.split("/", 1)[0]
    if not sep or scheme not in ("http", "https") or not host:
        raise argparse.ArgumentTypeError(f"expected in-cluster, kubeconfig or an http(s):// URL, got {text[:70]!r}")
    return text
