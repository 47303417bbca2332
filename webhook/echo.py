"""What podgate repeats of its input, bounded: names and values in messages and log lines.

A container name, a port name or an annotation value comes from whoever sent the Pod; a policy
value comes from whoever wrote the file. Repeated whole, one 1 MB name in twenty violations made
a 40 MB answer. Everything quoted from input goes through ``echo``: real names (a DNS label is
63 characters, a label value 63, a qualified name 253) come out as they are, anything longer as
its start, its length, and its end.
"""

from __future__ import annotations

NAME_MAX = 253  # the longest name Kubernetes accepts anywhere a rule quotes one
MESSAGE_MAX = 1000  # a schema message quoting a value: enough to see which value


def echo(text: str, limit: int = NAME_MAX) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and end around its length."""
    if len(text) <= limit:
        return text
    keep = max(8, (limit - 30) // 2)
    return f"{text[:keep]}...({len(text)} characters)...{text[-keep:]}"
