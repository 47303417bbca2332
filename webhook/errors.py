"""Error types, split by the channel they travel on.

A malformed request is the caller's fault and becomes an HTTP 4xx (ReviewError); a Pod that
breaks the rules is not an error at all (it gets ``allowed: false``). Policy problems are found
at load time (PolicyError) and never reach a request.
"""

from __future__ import annotations


class PodgateError(Exception):
    """Base class for every error podgate raises on purpose."""


class ReviewError(PodgateError):
    """The request is not an AdmissionReview we can answer: HTTP ``status`` with ``message``.

    ``uid`` is set when the request got far enough to name itself; the server then answers with
    an AdmissionReview that denies, so the API server shows the reason to the user.
    """

    def __init__(self, message: str, status: int = 400, uid: str | None = None,
                 api_version: str = "admission.k8s.io/v1") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.uid = uid
        self.api_version = api_version


class PodShapeError(PodgateError):
    """A Pod field has the wrong type or value; ``path`` is a JSON pointer into the Pod."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '/'}: {message}")
        self.path = path
        self.message = message


class PolicyError(PodgateError):
    """A policy file is invalid; the text names the file and the JSON path."""


class InjectionError(PodgateError):
    """A Pod asks for an injection the policy does not allow (e.g. a bad override annotation)."""


class NamespaceUnavailable(PodgateError):
    """The labels of a namespace are unknown and the API server cannot be asked."""


class WouldWait(PodgateError):
    """Answering would wait on something slow (the API server): the caller that must not block
    (the worker's event loop) passes the request to a thread, which may wait."""
