"""The fault-under-load program (tests/faults/run.py), bounded for CI: 3,000 requests, < 60 s.

Its figures are printed to the terminal even when the test passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .faults.run import ok, report, run


def test_faults_under_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the requests are paced over 12 s; the 120 s cap is for a loaded machine
    figures = run(total=3000, seconds=120, clients=4, work=tmp_path)
    text = report(figures)
    with capsys.disabled():
        print("\nfaults under load (tests/faults/run.py):\n" + text)
    assert ok(figures), text
    assert figures.sent >= 2500 and figures.answered >= figures.sent - 20
    assert figures.faults["worker SIGKILL"] == 1 and figures.faults["SIGTERM"] == 1
    assert figures.faults["policy swap (invalid)"] == 2 and figures.faults["certificate rotation"] == 2
