"""``podgate serve --record DIR``: keep the AdmissionReview requests the server receives as files.

Platform teams turn real traffic into test cases (``podgate test DIR --init FILE...``). The
files are named like the recorded kube-apiserver payloads in tests/data/reviews/apiserver:
``NNNNNN_<webhook>_<OPERATION>_<namespace>_<pod>[_dryrun].request.json``.

Safe under gunicorn with several workers, without shared memory or locks between processes:
- the sequence number NNNNNN is claimed with an exclusive create (O_EXCL) of ``.claims/NNNNNN``,
  so two workers never write the same file and the cap on the number of files is exact across
  workers (and across restarts: clear the directory to record more);
- each file is written under a temporary name and renamed into place (readers never see half a
  file);
- once the cap is reached a worker stops trying: the hot path is one attribute test, as it is
  when recording is off (no recorder at all).

Recording is not a side effect on the cluster (the webhook's ``sideEffects: None`` stays true,
and dry-run requests are recorded too, marked ``_dryrun``), but the files hold whole Pod specs,
environment values included: treat the directory as sensitive. ``request.userInfo`` (who sent
the request) is replaced by a placeholder unless ``user_info`` is set.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..review import AdmissionRequest

log = logging.getLogger("podgate.record")

CLAIMS = ".claims"
REDACTED_USER = {"username": "redacted"}
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class RecordOptions:
    directory: Path
    max_files: int = 1000  # across all workers and restarts
    max_bytes: int = 1024 * 1024  # larger requests are not recorded
    user_info: bool = False  # keep request.userInfo as sent (default: redacted)


def _part(value: str | None, fallback: str) -> str:
    return _UNSAFE.sub("-", value or "").strip("-")[:60] or fallback


def file_name(seq: int, webhook: str, request: AdmissionRequest) -> str:
    obj = request.object if isinstance(request.object, dict) else {}
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = request.name or meta.get("name")
    if not name and isinstance(meta.get("generateName"), str):
        name = meta["generateName"] + "GEN"  # the API server has not named the Pod yet
    suffix = "_dryrun" if request.dry_run else ""
    return (f"{seq:06d}_{webhook}_{request.operation}_{_part(request.namespace, 'cluster')}_"
            f"{_part(name, 'unnamed')}{suffix}.request.json")


class Recorder:
    """Writes requests into one directory until ``max_files`` have been written (by anyone)."""

    def __init__(self, options: RecordOptions) -> None:
        self.options = options
        self.directory = options.directory
        self._claims = self.directory / CLAIMS
        self._claims.mkdir(parents=True, exist_ok=True)
        self._next = len(os.listdir(self._claims))  # a hint: O_EXCL decides
        self._lock = threading.Lock()
        self.full = self._next >= options.max_files
        self.skipped = 0  # requests over max_bytes

    def _claim(self) -> int | None:
        with self._lock:
            while self._next < self.options.max_files:
                seq = self._next
                self._next += 1
                try:
                    os.close(os.open(self._claims / f"{seq:06d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                    return seq
                except FileExistsError:
                    continue  # another worker took it
            self.full = True
            log.info("recording stopped: %d requests recorded in %s", self.options.max_files, self.directory)
            return None

    def record(self, webhook: str, body: bytes, request: AdmissionRequest) -> Path | None:
        """Save one request; never raises (a full disk must not fail admission)."""
        if self.full:
            return None
        if len(body) > self.options.max_bytes:
            self.skipped += 1
            return None
        try:
            review: Any = orjson.loads(body)
            if not self.options.user_info and isinstance(review.get("request"), dict):
                review["request"]["userInfo"] = REDACTED_USER
            data = orjson.dumps(review, option=orjson.OPT_INDENT_2) + b"\n"
            seq = self._claim()
            if seq is None:
                return None
            target = self.directory / file_name(seq, webhook, request)
            tmp = self.directory / f".{target.name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
            return target
        except (OSError, orjson.JSONDecodeError, TypeError) as exc:
            log.warning("could not record request %s: %s", request.uid, exc)
            return None
