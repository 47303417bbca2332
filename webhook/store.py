"""The live policy set of a running server, reloaded when its files change.

A background thread compares a fingerprint of the policy directory (names, where the ConfigMap
``..data`` symlink points, and a digest of each file's bytes) every few seconds; requests never
touch the disk. Digests rather than mtimes and sizes: an edit of the same length within one
filesystem timestamp tick must still count as a change. A change is loaded once it has held
still for one interval, and published only if what was read is what held still. A new set replaces the old one in a single reference
swap, so a request sees either the whole old set or the whole new one; an invalid new set is
logged and the last good one stays.

Whatever is in the directory, a reload neither raises nor blocks: files are read with the size
bound of policy files, FIFOs and devices are never read (a FIFO would block the watcher, and the
master's loop with it; ``/dev/zero`` would never end), and a set that fails to load for any
reason is reported once per change of the files, not on every tick.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import PolicyError
from .files import POLICY_FILE_MAX, InputFileError, read_bytes
from .policy import PolicySet, default_policy_dir, load_policy_set

log = logging.getLogger("podgate.policy")

Fingerprint = tuple[tuple[str, str, bytes], ...]
MAX_LOAD_ATTEMPTS = 3


def fingerprint(directory: Path) -> Fingerprint:
    """What changes when a policy file, or the ConfigMap volume behind it, changes."""
    entries = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    for name in names:
        if name.startswith(".") and name != "..data":
            continue
        path = directory / name
        try:
            # follows symlinks, as the loader does; one byte more than the loader reads, so that
            # a file growing past the bound still counts as a change
            data = read_bytes(path, POLICY_FILE_MAX + 1, regular_only=True)
        except InputFileError as exc:  # a directory, a FIFO, a device, gone since listdir, too large
            data = f"unreadable: {exc}".encode()
        digest = hashlib.blake2b(data, digest_size=16).digest()
        entries.append((name, os.path.realpath(path), digest))
    return tuple(entries)


class PolicyStore:
    """Holds the current PolicySet; ``current`` is one attribute read, safe from any thread."""

    def __init__(self, directory: str | Path | None,
                 on_reload: Callable[[bool, str], None] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.on_reload = on_reload or (lambda ok, detail: None)
        self._fingerprint: Fingerprint = ()
        self._pending: Fingerprint = ()
        self.current: PolicySet | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self, expected: Fingerprint | None = None) -> bool:
        """(Re)load the directory; keep the last good set on failure. True if a set was loaded.

        A set is published only if the files did not change while they were read (the same
        fingerprint before and after): a ConfigMap swap, or an editor writing in place, between
        reading one file and the next would otherwise yield a set that was never on disk. With
        ``expected`` (the fingerprint the watcher saw hold still), files that moved on since are
        left for the next tick: they may be the first half of a write.
        """
        directory = self.directory or default_policy_dir()
        for _attempt in range(MAX_LOAD_ATTEMPTS):
            seen = fingerprint(directory)
            if expected is not None and seen != expected:
                return False
            try:
                policies: PolicySet | None = load_policy_set(directory)
                error: str | None = None
            except PolicyError as exc:
                policies, error = None, str(exc)
            except Exception as exc:  # a loader bug: the server keeps serving, and says it once
                log.exception("policy loader error")
                policies, error = None, f"{directory}: podgate could not load these files: {type(exc).__name__}: {exc}"
            if fingerprint(directory) == seen:
                break
            log.info("policy files changed while being read; reading them again")
        else:
            return False  # still changing: the watcher tries again on its next tick
        if error is not None or policies is None:
            self.last_error = error = error or "no policy set"
            self._fingerprint = seen  # do not retry the same broken files every tick
            kept = "keeping the last good policy set" if self.current else "no policy set loaded"
            log.error("policy reload failed (%s):\n%s", kept, error)
            self.on_reload(False, error)
            return False
        for warning in policies.warnings:
            log.warning("%s", warning)
        self.current = policies
        self.last_error = None
        self._fingerprint = seen
        log.info("policies loaded from %s: %s", directory,
                 ", ".join(p.name for p in policies.policies) or "builtin defaults")
        self.on_reload(True, "")
        return True

    def changed(self) -> bool:
        return fingerprint(self.directory or default_policy_dir()) != self._fingerprint

    def poll(self) -> None:
        """Reload if the files changed since the last load attempt."""
        if self.changed():
            self.load()

    def tick(self) -> None:
        """One step of watching: load a change once it has held still since the previous tick
        (a file being written in place is read whole, not half-written, which can parse)."""
        now = fingerprint(self.directory or default_policy_dir())
        if now != self._fingerprint and now == self._pending:
            self.load(expected=now)
        self._pending = now

    def watch(self, interval: float) -> None:
        """Start ticking in a daemon thread (one per worker process)."""
        if self._thread is not None or interval <= 0:
            return
        self._pending = self._fingerprint

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.tick()
                except Exception:  # the watcher must outlive any surprise
                    log.exception("policy watcher error")

        self._thread = threading.Thread(target=run, name="policy-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
