"""Server settings, read from the environment in exactly one place (``Settings.from_env``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

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
        settings = cls()
        if value := env.get("PODGATE_POLICIES"):
            settings = replace(settings, policy_dir=Path(value))
        if value := env.get("PODGATE_RELOAD_INTERVAL"):
            settings = replace(settings, reload_interval=float(value))
        if value := env.get("PODGATE_MAX_BODY_BYTES"):
            settings = replace(settings, max_body_bytes=int(value))
        if value := env.get("PODGATE_NAMESPACE_LABELS"):
            settings = replace(settings, namespace_labels_file=Path(value))
        if value := env.get("PODGATE_KUBE_API"):
            settings = replace(settings, kube_api=value)
        if value := env.get("PODGATE_NAMESPACE_FALLBACK"):
            settings = replace(settings, namespace_fallback=value)
        if value := env.get("PODGATE_NAMESPACE_RESYNC"):
            settings = replace(settings, namespace_resync=float(value))
        if value := env.get("PODGATE_METRICS"):
            settings = replace(settings, metrics=value.lower() not in ("0", "false", "no", "off"))
        if value := env.get("PODGATE_RECORD_DIR"):
            settings = replace(settings, record_dir=Path(value))
        if value := env.get("PODGATE_RECORD_MAX_FILES"):
            settings = replace(settings, record_max_files=int(value))
        if value := env.get("PODGATE_RECORD_MAX_BYTES"):
            settings = replace(settings, record_max_bytes=int(value))
        if value := env.get("PODGATE_RECORD_USER_INFO"):
            settings = replace(settings, record_user_info=value.lower() in ("1", "true", "yes", "on"))
        if env.get("PODGATE_BENCH_BASELINE", "").lower() in ("1", "true", "yes"):
            settings = replace(settings, bench_baseline=True)
        if value := env.get("PODGATE_REQUEST_TIMEOUT"):
            settings = replace(settings, request_timeout=float(value))
        return settings

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env: how ``podgate serve`` hands settings to gunicorn workers."""
        env = {"PODGATE_RELOAD_INTERVAL": str(self.reload_interval),
               "PODGATE_MAX_BODY_BYTES": str(self.max_body_bytes),
               "PODGATE_REQUEST_TIMEOUT": str(self.request_timeout),
               "PODGATE_METRICS": "true" if self.metrics else "false"}
        if self.policy_dir is not None:
            env["PODGATE_POLICIES"] = str(self.policy_dir)
        if self.namespace_labels_file is not None:
            env["PODGATE_NAMESPACE_LABELS"] = str(self.namespace_labels_file)
        if self.record_dir is not None:
            env.update(PODGATE_RECORD_DIR=str(self.record_dir), PODGATE_RECORD_MAX_FILES=str(self.record_max_files),
                       PODGATE_RECORD_MAX_BYTES=str(self.record_max_bytes),
                       PODGATE_RECORD_USER_INFO="true" if self.record_user_info else "false")
        if self.bench_baseline:
            env["PODGATE_BENCH_BASELINE"] = "1"
        return env
