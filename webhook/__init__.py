"""podgate: a Kubernetes admission webhook for multi-container Pods."""

__version__ = "0.1.0"


def create_app(settings=None):  # noqa: ANN001,ANN201  (re-exported lazily: keeps `import webhook` light)
    """The Flask app factory; see ``webhook.app.create_app``."""
    from .server.app import create_app as factory

    return factory(settings)
