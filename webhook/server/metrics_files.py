"""prometheus-client's multiprocess directory: a dead worker's files folded into one archive.

Each process writes its values to files named after its pid (``counter_<pid>.db``,
``histogram_<pid>.db``, ``gauge_<mode>_<pid>.db``) and ``/metrics`` sums every ``*.db`` file in
the directory. A dead worker's counts must stay in those sums, so its files cannot simply go; but
with worker recycling (``--max-requests``) or workers killed and replaced, each dead worker would
leave its files behind for good: the directory (an in-memory volume in the chart) grows without
bound, and every scrape reads more files. So when gunicorn's master reaps a worker, its values are
added into ``<type>_archive.db`` (written with prometheus-client's own ``MmapedDict``, so the
collector reads it like any other file) and its files are deleted. The directory then holds the
live workers' files and at most one archive per type.

A scrape and a fold exclude each other with ``flock`` on ``.lock`` in the directory (shared for
scrapes, which may run side by side; exclusive for a fold), so a scrape sees a dead worker's
values exactly once: still in its own files, or already in the archive, never both, never neither.
Scrapes read through ``DirectoryCollector``, which takes that lock.

What is folded, by the collector's own rules: counters, summaries and histograms (every sample
adds), gauges of mode ``sum`` (add), ``min``/``max`` (keep the extreme) and ``mostrecent`` (keep
the newest). ``live*`` gauges of a dead process are dropped (``mark_process_dead``), as before.
Gauges of mode ``all`` are kept per pid (a ``pid`` label is their point) and are not folded;
podgate has none.

Import prometheus-client here only inside functions: the master must not load the metric
definitions (they would write files of their own), and the import must come after
``runner.prepare_metrics_dir``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("podgate")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = ".lock"  # not *.db: the collector never reads it
ARCHIVE = "archive"  # the "pid" part of an archive's name

# file kind (the name without its pid) -> how two values of one sample combine
_FOLDED = {"counter": "sum", "summary": "sum", "histogram": "sum",
           "gauge_sum": "sum", "gauge_min": "min", "gauge_max": "max", "gauge_mostrecent": "mostrecent"}


@contextmanager
def _locked(directory: Path, mode: int, timeout: float | None = None) -> Iterator[bool]:
    """Hold ``flock(mode)`` on the directory's lock file; yields False if ``timeout`` ran out.

    A fresh descriptor each time: flock belongs to the open file, so threads that shared one
    descriptor would share (and release) one lock.
    """
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or deadline is None:
                    raise
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.005)
        yield True
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def scraping(directory: str | Path) -> Iterator[None]:
    """Hold while reading the directory for ``/metrics``: no fold runs meanwhile."""
    with _locked(Path(directory), fcntl.LOCK_SH):
        yield


def _sized(path: Path) -> bool:
    """False for a file that a starting process has created but not sized yet.

    prometheus-client creates a value file, then sizes it: for a moment it exists at 0 bytes (for
    good, if the process is killed in that moment), holding no value, and the library's reader
    fails on it, failing the whole scrape.
    """
    try:
        return path.stat().st_size >= 8  # the header: bytes used, padding
    except FileNotFoundError:
        return False


class DirectoryCollector:
    """All processes' values for ``/metrics``: prometheus-client's multiprocess merge, of the
    files read under the scrape lock, skipping files not sized yet."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        with scraping(self.directory):  # merge reads every file before it returns
            files = [str(p) for p in self.directory.glob("*.db") if _sized(p)]
            return MultiProcessCollector.merge(files, accumulate=True)


def _kind_and_pid(name: str) -> tuple[str, str] | None:
    """``counter_12.db`` -> ("counter", "12"); ``gauge_livesum_12.db`` -> ("gauge_livesum", "12")."""
    if not name.endswith(".db"):
        return None
    kind, _, pid = name[:-3].rpartition("_")
    return (kind, pid) if kind else None


def process_files(directory: Path, pid: int | str) -> list[Path]:
    """The value files a process wrote."""
    return sorted(p for p in directory.glob(f"*_{pid}.db") if (_kind_and_pid(p.name) or ("", ""))[1] == str(pid))


def _combine(how: str, old: tuple[float, float], new: tuple[float, float]) -> tuple[float, float]:
    (value, stamp), (more, more_stamp) = old, new
    if how == "sum":
        return value + more, max(stamp, more_stamp)
    if how == "min":
        return (value, stamp) if value <= more else (more, more_stamp)
    if how == "max":
        return (value, stamp) if value >= more else (more, more_stamp)
    return (value, stamp) if stamp >= more_stamp else (more, more_stamp)  # mostrecent


def _read(path: Path) -> dict[str, tuple[float, float]]:
    from prometheus_client.mmap_dict import MmapedDict

    if not _sized(path):
        return {}
    return {key: (value, stamp) for key, value, stamp, _ in MmapedDict.read_all_values_from_file(str(path))}


def _write(path: Path, values: dict[str, tuple[float, float]]) -> None:
    """Write a complete file under a name the collector ignores, then rename it into place."""
    from prometheus_client.mmap_dict import MmapedDict

    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    out = MmapedDict(str(tmp))
    try:
        for key, (value, stamp) in values.items():
            out.write_value(key, value, stamp)
    finally:
        out.close()
    os.replace(tmp, path)


def fold(directory: Path, pid: int | str) -> int:
    """Add a dead process's values into the archives and delete its files; returns files removed.

    The caller holds the exclusive lock. Each archive is replaced whole before the dead files go,
    so a crash in between can only leave a value counted twice until the directory is emptied at
    the next start; under the lock, no scrape sees that state.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # live* gauges: the dead process's are dropped
    removed = 0
    for path in process_files(directory, pid):
        kind, _ = _kind_and_pid(path.name) or ("", "")
        how = _FOLDED.get(kind)
        if how is None:
            continue  # gauge mode "all": kept per pid
        archive = directory / f"{kind}_{ARCHIVE}.db"
        merged = _read(archive) if archive.exists() else {}
        for key, taken in _read(path).items():
            merged[key] = _combine(how, merged[key], taken) if key in merged else taken
        _write(archive, merged)
        path.unlink()
        removed += 1
    return removed


class Archiver:
    """Folds dead workers' files in gunicorn's master (``child_exit``).

    The master must keep supervising, so it waits at most ``timeout`` for scrapes in progress to
    finish; a worker it could not fold then stays as it is (its files still count, once) and is
    tried again at the next worker exit.
    """

    def __init__(self, directory: str | Path, timeout: float = 1.0) -> None:
        self.directory = Path(directory)
        self.timeout = timeout
        self.pending: set[int] = set()

    def worker_exited(self, pid: int, live: set[int] | frozenset[int] = frozenset()) -> None:
        """Fold ``pid`` and any worker left pending; ``live`` pids are never touched (a new worker
        may have been given a pending one's pid)."""
        self.pending.add(pid)
        self.pending -= live
        try:
            with _locked(self.directory, fcntl.LOCK_EX, self.timeout) as held:
                if not held:
                    log.warning("metrics of exited workers %s not archived yet: a scrape held the lock over %.1fs",
                                sorted(self.pending), self.timeout)
                    # their live gauges go now all the same: the collector passes over a live
                    # gauge's file that vanished between its listing and its reading
                    from prometheus_client import multiprocess

                    for dead in self.pending:
                        multiprocess.mark_process_dead(dead, str(self.directory))
                    return
                while self.pending:
                    dead = self.pending.pop()
                    fold(self.directory, dead)
        except Exception:  # noqa: BLE001  (the master must outlive any surprise)
            log.exception("archiving the metrics of exited workers failed; their files stay and count")
