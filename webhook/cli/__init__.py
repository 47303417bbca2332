"""The ``podgate`` command and the offline tools: check, inject, test suites, lint, explain.

Built on the core (``webhook``) and, for ``serve`` and ``certs``, on ``webhook.server``; the
commands are in ``commands``.
"""
