"""The live policy set of a running server, reloaded when its files change.

A background thread compares a cheap fingerprint of the policy directory (names, sizes, mtimes,
and where the ConfigMap ``..data`` symlink points) every few seconds; requests never touch the
disk. A new set replaces the old one in a single reference swap, so a request sees either the
whole old set or the whole new one; an invalid new set is logged and the last good one stays.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import PolicyError
from .policy import PolicySet, default_policy_dir, load_policy_set

log = logging.getLogger("podgate.policy")

Fingerprint = tuple[tuple[str, str, int, int], ...]


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
            st = path.stat()  # follows symlinks: a swapped ..data changes the target's inode
        except OSError:
            continue
        entries.append((name, os.path.realpath(path), st.st_mtime_ns, st.st_size))
    return tuple(entries)


class PolicyStore:
    """Holds the current PolicySet; ``current`` is one attribute read, safe from any thread."""

    def __init__(self, directory: str | Path | None,
                 on_reload: Callable[[bool, str], None] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._on_reload = on_reload or (lambda ok, detail: None)
        self._fingerprint: Fingerprint = ()
        self.current: PolicySet | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> bool:
        """(Re)load the directory; keep the last good set on failure. True if a set was loaded."""
        directory = self.directory or default_policy_dir()
        seen = fingerprint(directory)
        try:
            policies = load_policy_set(directory)
        except PolicyError as exc:
            self.last_error = str(exc)
            self._fingerprint = seen  # do not retry the same broken files every tick
            kept = "keeping the last good policy set" if self.current else "no policy set loaded"
            log.error("policy reload failed (%s):\n%s", kept, exc)
            self._on_reload(False, str(exc))
            return False
        self.current = policies
        self.last_error = None
        self._fingerprint = seen
        log.info("policies loaded from %s: %s", directory,
                 ", ".join(p.name for p in policies.policies) or "builtin defaults")
        self._on_reload(True, "")
        return True

    def changed(self) -> bool:
        return fingerprint(self.directory or default_policy_dir()) != self._fingerprint

    def poll(self) -> None:
        """Reload if the files changed since the last load attempt."""
        if self.changed():
            self.load()

    def watch(self, interval: float) -> None:
        """Start polling in a daemon thread (one per worker process)."""
        if self._thread is not None or interval <= 0:
            return

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:  # the watcher must outlive any surprise
                    log.exception("policy watcher error")

        self._thread = threading.Thread(target=run, name="policy-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
