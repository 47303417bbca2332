"""The Flask app factory: settings, policies and routes wired together; no admission logic here."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import JSONProvider
from werkzeug.exceptions import HTTPException

from ..errors import PolicyError
from ..namespaces import StaticNamespaceLabels, load_namespace_labels
from ..policy import NamespaceLabels
from ..store import PolicyStore
from .logs import configure as configure_logging
from .nscache import NamespaceCache, api_client
from .record import Recorder, RecordOptions
from .settings import Settings
from .state import State, json_error

log = logging.getLogger("podgate")


class OrjsonProvider(JSONProvider):
    """Flask's JSON through orjson: the webhook serialises on every Pod creation."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def create_app(settings: Settings | None = None, store: PolicyStore | None = None) -> Flask:
    """Build the app; raise PolicyError at startup if the policies cannot be loaded.

    ``store``: a store that may already hold a policy set, e.g. the one a gunicorn worker
    inherits from the master. The files are read again if they changed since the store last
    tried them; if they are invalid now, the inherited set (the last good one) is kept instead of failing, so a worker that restarts during a bad
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
    # An inherited store that already tried the files on disk (and kept its set, or refused
    # them and said why) does not read them again: each worker replaced during a bad policy
    # update would log the same refusal once more.
    if store.current is None or store.changed():
        store.load()
    else:  # counted as a load, as before: what the inherited store last concluded
        metrics.policy_reloaded(store.last_error is None, store.last_error or "")
    if store.current is None:
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

    # The views import the metrics, which prometheus-client creates at import time: import them
    # only now, after the server has set PROMETHEUS_MULTIPROC_DIR.
    from .views import DirectAdmission, baseline_bp, bp, metrics_view

    app.register_blueprint(bp)
    if settings.metrics:
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

    app.wsgi_app = DirectAdmission(app)  # type: ignore[method-assign]
    return app
