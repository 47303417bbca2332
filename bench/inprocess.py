"""In-process mode: request bytes -> response bytes, without HTTP.

The podgate side is exactly what a server worker does with a body: ``admission.review`` (parse,
select the policy, evaluate every rule, inject, build the response) and ``review.dumps``. The
yardstick is ``json.loads`` + ``json.dumps`` of the same bytes with the standard library; orjson's
own round trip is shown too. All are timed round robin in A B B A order, in CPU time of the
thread, many short repeats each, and the best repeat of each is kept. The garbage collector
stays on: its work is part of podgate's cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from webhook.admission import Context, review
from webhook.policy import load_policy_set
from webhook.review import dumps

from payloads import Payload, envelope, many_listeners


def podgate_call(payload: Payload, ctx: Context) -> Callable[[], bytes]:
    body, webhook = payload.body, payload.webhook

    def call() -> bytes:
        outcome = review(body, webhook, ctx)  # type: ignore[arg-type]
        assert outcome.response is not None
        return dumps(outcome.response)

    return call


def stdlib_call(payload: Payload) -> Callable[[], str]:
    body = payload.body
    return lambda: json.dumps(json.loads(body))


def orjson_call(payload: Payload) -> Callable[[], bytes]:
    body = payload.body
    return lambda: orjson.dumps(orjson.loads(body))


def _loops(fn: Callable[[], object], target: float) -> int:
    """How many calls take about ``target`` seconds."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if (elapsed := time.perf_counter() - start) >= target / 4 or n >= 1 << 20:
            return max(1, int(n * target / max(elapsed, 1e-9)))
        n *= 4


def _time(fn: Callable[[], object], loops: int) -> float:
    """CPU seconds of this thread per call: time the scheduler gave to other work is not counted."""
    start = time.thread_time()
    for _ in range(loops):
        fn()
    return (time.thread_time() - start) / loops


def paired(fns: Sequence[Callable[[], object]], rounds: int, target: float) -> list[float]:
    """Seconds per call of each function, timed round robin forwards then backwards: the best
    sample of each, the one least disturbed by the rest of the machine (as ``timeit`` advises)."""
    loops = [_loops(fn, target) for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for r in range(rounds):
        for i in (order if r % 2 == 0 else order[::-1]):
            samples[i].append(_time(fns[i], loops[i]))
    return [min(s) for s in samples]


@dataclass
class Row:
    name: str
    webhook: str
    size: int
    podgate: float  # seconds per call
    stdlib: float
    orjson: float

    @property
    def ratio(self) -> float:
        return self.podgate / self.stdlib


def measure(payloads: Sequence[Payload], rounds: int, target: float) -> list[Row]:
    """Every payload's three functions in one round robin, so a noisy moment is shared by all."""
    ctx = Context(load_policy_set())
    fns = [fn for p in payloads for fn in (podgate_call(p, ctx), stdlib_call(p), orjson_call(p))]
    times = paired(fns, rounds, target)
    return [Row(p.name, p.webhook, len(p.body), *times[3 * i:3 * i + 3]) for i, p in enumerate(payloads)]


LISTENERS = (10, 100, 1000, 10000)


def scaling_payloads(counts: Sequence[int] = LISTENERS) -> list[Payload]:
    """Pods with N distinct listeners, 10 per container (so N/10 containers): to both webhooks."""
    out = []
    for n in counts:
        body = envelope(many_listeners(n), f"bench-{n}-listeners")
        out += [Payload(f"{n} listeners", "validate", body), Payload(f"{n} listeners", "mutate", body)]
    return out
