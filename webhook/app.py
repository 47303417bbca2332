"""The Flask app factory: settings, policies and routes wired together; no admission logic here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import JSONProvider
from werkzeug.exceptions import HTTPException

from .errors import PolicyError
from .logs import configure as configure_logging
from .namespaces import StaticNamespaceLabels, load_namespace_labels
from .nscache import NamespaceCache, api_client
from .policy import NamespaceLabels
from .record import RecordOptions, Recorder
from .report import Reporter
from .settings import Settings
from .store import PolicyStore

log = logging.getLogger("podgate")


class OrjsonProvider(JSONProvider):
    """Flask's JSON through orjson: the webhook serialises on every Pod creation."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


@dataclass
class State:
    """What the views need, kept on ``app.extensions["podgate"]``."""

    settings: Settings
    store: PolicyStore
    namespace_labels: NamespaceLabels
    recorder: Recorder | None = None  # podgate serve --record; None: recording is off
    namespace_cache: NamespaceCache | None = None  # labels from the API server (in a cluster)
    # True once the server was told to stop: /readyz fails while requests are still served
    draining: Callable[[], bool] = lambda: False
    reporter: Reporter = field(default_factory=Reporter)  # log line and metrics of each answer

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        """Ready once policies are loaded and (in a cluster) namespace labels first synced;
        unready again once shutting down, while requests are still served (the drain)."""
        if self.draining():
            return False, "shutting down"
        if self.store.current is None:
            return False, "policies not loaded"
        if self.namespace_cache is not None:
            return self.namespace_cache.status()
        return True, "ready"


def json_error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message, "status": status}), status=status,
                    mimetype="application/json")


def create_app(settings: Settings | None = None, store: PolicyStore | None = None) -> Flask:
    """Build the app; raise PolicyError at startup if the policies cannot be loaded.

    ``store``: a store that may already hold a policy set, e.g. the one a gunicorn worker
    inherits from the master. The files are read again; if they are invalid now, the inherited
    set (the last good one) is kept instead of failing, so a worker that restarts during a bad
    policy update still boots (gunicorn stops the whole server when a worker fails to boot).
    """
    settings = settings or Settings.from_env()
    configure_logging()
    app = Flask("podgate")
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    from . import metrics

    if store is None:
        store = PolicyStore(settings.policy_dir)
    store.on_reload = metrics.policy_reloaded
    if not store.load() and store.current is None:
        raise PolicyError(store.last_error or "policies could not be loaded")
    store.watch(settings.reload_interval)
    cache = None
    labels: NamespaceLabels
    if settings.kube_api:
        cache = NamespaceCache(api_client(settings.kube_api), resync=settings.namespace_resync,
                               on_unavailable=settings.namespace_fallback,  # type: ignore[arg-type]
                               report=metrics.set_namespace_cache, count=metrics.namespace_cache_event)
        cache.start()
        labels = cache
    elif settings.namespace_labels_file:
        labels = load_namespace_labels(settings.namespace_labels_file)
    else:
        labels = StaticNamespaceLabels()
    recorder = None
    if settings.record_dir is not None:
        recorder = Recorder(RecordOptions(settings.record_dir, settings.record_max_files,
                                          settings.record_max_bytes, settings.record_user_info))
    app.extensions["podgate"] = State(settings, store, labels, recorder, cache)

    from .views import baseline_bp, bp

    app.register_blueprint(bp)
    if settings.metrics:
        from .views import metrics_view

        app.add_url_rule("/metrics", view_func=metrics_view, methods=["GET"])
    if settings.bench_baseline:
        app.register_blueprint(baseline_bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return json_error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return json_error(500, "internal error; see podgate's logs")

    return app
