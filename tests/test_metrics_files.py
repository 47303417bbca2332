"""Folding a dead worker's multiprocess metric files into the archive: the same exposition before
and after, fewer files, and no scrape that counts a dead worker twice or not at all."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from webhook.server import metrics, metrics_files
from webhook.server.metrics_files import MULTIPROC_ENV, Archiver

from .test_metrics import samples

# One process's metrics, of every type and gauge mode; argv: the value it records (dyadic, so
# sums are exact in any order).
WRITER = """
import sys
from prometheus_client import Counter, Gauge, Histogram, Summary
n = float(sys.argv[1])
c = Counter("c", "a counter", ["k"])
c.labels("a").inc(n)
c.labels(sys.argv[2]).inc(1)
h = Histogram("h", "a histogram", ["w"], buckets=(1, 2, 4))
h.labels("x").observe(n)
h.labels("x").observe(0.5)
Summary("s", "a summary").observe(n)
for mode in ("sum", "min", "max", "mostrecent", "all", "livesum", "livemax"):
    Gauge("g_" + mode, mode, multiprocess_mode=mode).set(n)
import os
print(os.getpid())
"""


def run_writer(directory: Path, value: float, label: str) -> int:
    out = subprocess.run([sys.executable, "-c", WRITER, str(value), label], check=True, capture_output=True,
                         text=True, env={MULTIPROC_ENV: str(directory), "PATH": "/usr/bin:/bin"})
    return int(out.stdout)


def collected(directory: Path) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    families = MultiProcessCollector.merge([str(p) for p in directory.glob("*.db")])
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples)


def test_folding_dead_processes_keeps_every_value_and_drops_their_files(tmp_path):
    # run order: first (1), live (2), last (4): the newest "mostrecent" value is a folded one
    first = run_writer(tmp_path, 1, "only-first")
    live = run_writer(tmp_path, 2, "only-live")
    last = run_writer(tmp_path, 4, "only-last")
    for dead in (first, last):
        mark_process_dead(dead, str(tmp_path))  # what the exposition showed before: dead live* gauges gone
    before = collected(tmp_path)

    for dead in (first, last):
        metrics_files.fold(tmp_path, dead)

    assert collected(tmp_path) == before
    names = {p.name for p in tmp_path.glob("*.db")}
    archives = {f"{kind}_archive.db" for kind in ("counter", "histogram", "summary", "gauge_sum", "gauge_min",
                                                   "gauge_max", "gauge_mostrecent")}
    kept_per_pid = {f"gauge_all_{first}.db", f"gauge_all_{last}.db"}  # mode "all" labels each pid
    assert names == archives | kept_per_pid | {p.name for p in metrics_files.process_files(tmp_path, live)}
    assert not list(tmp_path.glob("*.tmp"))
    value = dict(((n, lbl), v) for n, lbl, v in before)
    assert value[("c_total", (("k", "a"),))] == 7
    assert value[("h_count", (("w", "x"),))] == 6
    assert value[("g_mostrecent", ())] == 4 and value[("g_min", ())] == 1 and value[("g_sum", ())] == 7


def write_counter(directory: Path, pid: int | str, value: float) -> None:
    d = MmapedDict(str(directory / f"counter_{pid}.db"))
    d.write_value(mmap_key("c", "c_total", [], [], "a counter"), value, 0.0)
    d.close()


def test_a_scrape_never_sees_a_dead_worker_twice_or_not_at_all(tmp_path, monkeypatch):
    """Scrape /metrics (the real exposition) over and over while the master folds 200 dead workers."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    write_counter(tmp_path, 1, 1)  # a live worker
    dead = list(range(1000, 1200))
    for pid in dead:
        write_counter(tmp_path, pid, 1)
    archiver = Archiver(tmp_path)
    done = threading.Event()

    def master() -> None:
        try:
            for pid in dead:
                archiver.worker_exited(pid)
        finally:
            done.set()

    seen = []
    folding = threading.Thread(target=master)
    folding.start()
    while not done.is_set():
        seen.append(samples(metrics.exposition()[0].decode())[("c_total", ())])
        time.sleep(0.001)  # a moment between scrapes (flock does not queue the fold ahead of new scrapes)
    folding.join()
    seen.append(samples(metrics.exposition()[0].decode())[("c_total", ())])
    assert len(seen) > 5  # the scrapes overlapped the folding
    assert set(seen) == {1 + len(dead)}
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_1.db", "counter_archive.db"]


def test_a_fold_waits_for_scrapes_and_what_it_could_not_fold_waits_for_the_next(tmp_path):
    write_counter(tmp_path, 7, 2)
    write_counter(tmp_path, 8, 3)
    write_counter(tmp_path, 9, 5)  # pid 9 is a new worker that got a recycled pid: never folded
    (tmp_path / "gauge_livemin_7.db").touch()
    archiver = Archiver(tmp_path, timeout=0.05)
    with metrics_files.scraping(tmp_path):
        archiver.worker_exited(7)
    assert archiver.pending == {7} and (tmp_path / "counter_7.db").exists()
    assert not (tmp_path / "gauge_livemin_7.db").exists()  # a dead worker's live gauges go at once
    archiver.pending.add(9)
    archiver.worker_exited(8, live={9})
    assert archiver.pending == set()
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_9.db", "counter_archive.db"]
    [(_, value, _, _)] = MmapedDict.read_all_values_from_file(str(tmp_path / "counter_archive.db"))
    assert value == 5


def test_a_file_not_sized_yet_is_skipped_and_folded_as_empty(tmp_path, monkeypatch):
    """A starting process creates its file, then sizes it: a scrape in between, or a fold of a
    process killed in between, sees 0 bytes. Neither fails; the file holds nothing to count."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    write_counter(tmp_path, 1, 3)
    (tmp_path / "counter_2.db").touch()
    assert samples(metrics.exposition()[0].decode())[("c_total", ())] == 3
    Archiver(tmp_path).worker_exited(2)
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_1.db", "counter_archive.db"]
    assert samples(metrics.exposition()[0].decode())[("c_total", ())] == 3


@pytest.mark.parametrize("name, parsed", [
    ("counter_12.db", ("counter", "12")),
    ("gauge_livesum_12.db", ("gauge_livesum", "12")),
    ("counter_archive.db", ("counter", "archive")),
    ("counter_archive.db.tmp", None),
    (".lock", None),
])
def test_file_names(name, parsed):
    assert metrics_files._kind_and_pid(name) == parsed
