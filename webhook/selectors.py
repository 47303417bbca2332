"""Kubernetes label selectors, compiled once into predicates over a label map."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Labels = Mapping[str, str]
Selector = Callable[[Labels], bool]


def compile_selector(spec: Mapping[str, Any]) -> Selector:
    """``{matchLabels, matchExpressions}`` -> predicate; an empty selector matches everything.

    The spec has already passed the policy schema, so operators and values are well formed.
    """
    wanted = tuple(dict(spec.get("matchLabels") or {}).items())
    tests: list[Callable[[Labels], bool]] = []
    for expr in spec.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], frozenset(expr.get("values") or ())
        if op == "In":
            tests.append(lambda labels, k=key, v=values: labels.get(k) in v)
        elif op == "NotIn":
            tests.append(lambda labels, k=key, v=values: labels.get(k) not in v)
        elif op == "Exists":
            tests.append(lambda labels, k=key: k in labels)
        else:  # DoesNotExist
            tests.append(lambda labels, k=key: k not in labels)

    def matches(labels: Labels) -> bool:
        for key, value in wanted:
            if labels.get(key) != value:
                return False
        return all(test(labels) for test in tests)

    return matches
