"""A running server never serves a policy set that was not on disk as a whole.

Two races: the files change while the store reads them (one file old, the next new), and a
file is caught half-written by an editor writing in place (a truncated YAML file can parse).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import webhook.store
from webhook.store import PolicyStore

from .test_policy import BUNDLED, configmap_volume, policy_doc

MESH = (BUNDLED / "mesh-proxy.yaml").read_text()


def test_a_swap_while_reading_is_not_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configmap_volume(tmp_path, "v1", {"mesh-proxy.yaml": MESH, "p.yaml": policy_doc("rules: {port-collision: deny}")})
    store = PolicyStore(tmp_path)
    assert store.load()
    configmap_volume(tmp_path, "v2", {"mesh-proxy.yaml": MESH, "p.yaml": policy_doc("rules: {port-collision: warn}")})
    real = webhook.store.load_policy_set
    calls = []

    def swap_during_first_read(directory: Any) -> Any:
        result = real(directory)  # read v2 ...
        if not calls:  # ... and the volume moves on to v3 before the store looks again
            configmap_volume(tmp_path, "v3", {"mesh-proxy.yaml": MESH,
                                              "p.yaml": policy_doc("rules: {port-collision: audit}")})
        calls.append(result.default.actions["port-collision"])
        return result

    monkeypatch.setattr(webhook.store, "load_policy_set", swap_during_first_read)
    assert store.load()
    assert calls == ["warn", "audit"]  # the read that overlapped a change was discarded
    assert store.current is not None and store.current.default.actions["port-collision"] == "audit"


def test_the_watcher_waits_for_a_file_to_hold_still(tmp_path: Path) -> None:
    """An in-place write in two steps, the first of which is valid YAML on its own: the half
    file must never become the live policy (it would drop duplicate-port-name: deny)."""
    shutil.copy(BUNDLED / "mesh-proxy.yaml", tmp_path)
    full = policy_doc("rules:\n  port-collision: deny\n  duplicate-port-name: deny\n")
    half = full[: full.index("  duplicate-port-name")]
    (tmp_path / "p.yaml").write_text(full.replace("deny\n  dup", "warn\n  dup"))
    store = PolicyStore(tmp_path)
    assert store.load()
    seen: list[tuple[str, str]] = []
    store.watch(0.2)  # the half file lives 0.03 s: two ticks can never both see it
    try:
        path = tmp_path / "p.yaml"
        for _ in range(3):
            with path.open("w") as f:  # truncate, write half, pause less than an interval, finish
                f.write(half)
                f.flush()
                time.sleep(0.03)
                f.write(full[len(half):])
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                actions = store.current.default.actions  # type: ignore[union-attr]
                seen.append((actions.get("port-collision", "?"), actions.get("duplicate-port-name", "default")))
                if seen[-1] == ("deny", "deny"):
                    break
                time.sleep(0.005)
            path.write_text(full.replace("deny\n  dup", "warn\n  dup"))  # back, for the next round
            time.sleep(0.5)
    finally:
        store.stop()
    assert ("deny", "default") not in seen  # never the half-written file
    assert ("deny", "deny") in seen


def test_a_worker_booting_during_a_bad_update_keeps_the_inherited_set(tmp_path: Path) -> None:
    """gunicorn stops the whole server when a worker fails to boot: a worker that restarts
    (SIGKILL, --max-requests) while the files are invalid must boot with the last good set,
    which it inherits from the master's store."""
    from webhook.app import create_app
    from webhook.errors import PolicyError
    from webhook.settings import Settings

    shutil.copy(BUNDLED / "mesh-proxy.yaml", tmp_path)
    (tmp_path / "p.yaml").write_text(policy_doc("rules: {port-collision: warn}"))
    master = PolicyStore(tmp_path)
    assert master.load()
    (tmp_path / "p.yaml").write_text(policy_doc("rules: {port-collision: maybe}"))
    settings = Settings(policy_dir=tmp_path, reload_interval=0)
    app = create_app(settings, store=master)  # what PodgateServer.load does in a new worker
    state = app.extensions["podgate"]
    assert state.store.current.default.actions["port-collision"] == "warn"
    assert "maybe" in (state.store.last_error or "")
    assert app.test_client().get("/readyz").status_code == 200
    with pytest.raises(PolicyError):  # without an inherited set, bad files still stop the start
        create_app(settings)
