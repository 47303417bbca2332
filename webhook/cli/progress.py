"""A progress line on a terminal, for runs that take more than a second.

Written on stderr (stdout may be a report piped elsewhere), redrawn in place with ``\\r`` at most
a few times a second, and erased at the end, so that what stays on the screen is the report.
Off when stderr is not a terminal: a CI log gets no carriage returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """``checked 1,200 of 5,000 objects (24%)``, shown once ``delay`` seconds have passed."""

    def __init__(self, stream: TextIO, total: int, noun: str = "objects", delay: float = 1.0,
                 interval: float = 0.2, clock: Callable[[], float] | None = None) -> None:
        self.stream = stream
        self.total = total
        self.noun = noun
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.delay = delay
        self.interval = interval
        self.enabled = total > 0 and stream.isatty()
        self.next_draw = self.start + delay
        self.width = 0  # of the line on screen, to erase it

    def update(self, done: int) -> None:
        if not self.enabled or self.clock() < self.next_draw:
            return
        self.next_draw = self.clock() + self.interval
        line = f"checked {done:,} of {self.total:,} {self.noun} ({100 * done // self.total}%)"
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def close(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0
