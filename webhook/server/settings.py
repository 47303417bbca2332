"""Server settings, read from the environment in exactly one place (``Settings.from_env``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024  # the API server's own limit on an object is 3 MiB


@dataclass(frozen=True)
class Settings:
    """Everything ``create_app`` needs; tests build one directly."""

    policy_dir: Path | None = None  # None: the bundled policies
    reload_interval: float = 2.0  # seconds between checks of the policy files; 0 disables
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES + 64 * 1024  # room for the AdmissionReview envelope
    namespace_labels_file: Path | None = None  # static namespace labels (offline / no API access)
    kube_api: str | None = None  # namespace labels from the API: in-cluster | kubeconfig | http(s)://URL
    namespace_fallback: str = "deny"  # a namespace the cache never saw, API unreachable: deny | no-labels
    namespace_resync: float = 300.0  # seconds before the namespace watch is renewed
    metrics: bool = True  # serve /metrics (Prometheus text format)
    record_dir: Path | None = None  # save received AdmissionReview requests here (podgate serve --record)
    record_max_files: int = 1000  # at most this many, across workers and restarts
    record_max_bytes: int = 1024 * 1024  # larger requests are not recorded
    record_user_info: bool = False  # keep request.userInfo (default: redacted)
    # Serve /baseline: parse the AdmissionReview and allow, evaluating nothing. Only the
    # benchmark (bench/run.py) turns it on, to measure what podgate adds to the HTTP and JSON work.
    bench_baseline: bool = False
    # Seconds a request may take when the API server does not say (it sends ?timeout=10s, the
    # webhook's timeoutSeconds); podgate uses BUDGET_SHARE of it, so its answer arrives in time.
    request_timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (field, parse, _) in ENVIRONMENT.items():
            raw = env.get(name)
            if raw:
                values[field] = parse(raw)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env: every setting that differs from its default, as PODGATE_* vars."""
        default = Settings()
        return {name: show(getattr(self, field)) for name, (field, _, show) in ENVIRONMENT.items()
                if getattr(self, field) != getattr(default, field)}


def _flag(raw: str) -> bool:
    return raw.lower() in ("1", "true", "yes", "on")


def _flag_text(value: bool) -> str:
    return "true" if value else "false"


# PODGATE_* variable -> (Settings field, parse, render)
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any], Callable[[Any], str]]] = {
    "PODGATE_POLICIES": ("policy_dir", Path, str),
    "PODGATE_RELOAD_INTERVAL": ("reload_interval", float, str),
    "PODGATE_MAX_BODY_BYTES": ("max_body_bytes", int, str),
    "PODGATE_NAMESPACE_LABELS": ("namespace_labels_file", Path, str),
    "PODGATE_KUBE_API": ("kube_api", str, str),
    "PODGATE_NAMESPACE_FALLBACK": ("namespace_fallback", str, str),
    "PODGATE_NAMESPACE_RESYNC": ("namespace_resync", float, str),
    "PODGATE_METRICS": ("metrics", lambda raw: raw.lower() not in ("0", "false", "no", "off"), _flag_text),
    "PODGATE_RECORD_DIR": ("record_dir", Path, str),
    "PODGATE_RECORD_MAX_FILES": ("record_max_files", int, str),
    "PODGATE_RECORD_MAX_BYTES": ("record_max_bytes", int, str),
    "PODGATE_RECORD_USER_INFO": ("record_user_info", _flag, _flag_text),
    "PODGATE_BENCH_BASELINE": ("bench_baseline", _flag, _flag_text),
    "PODGATE_REQUEST_TIMEOUT": ("request_timeout", float, str),
}
