"""A running server never serves a policy set that was not on disk as a whole.

Two races: the files change while the store reads them (one file old, the next new), and a
file is caught half-written by an editor writing in place (a truncated YAML file can parse).
"""

from __future__ import annotations

import os
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


def _actions(store: PolicyStore) -> tuple[str, str]:
    actions = store.current.default.actions  # type: ignore[union-attr]
    return actions.get("port-collision", "?"), actions.get("duplicate-port-name", "default")


FULL = policy_doc("rules:\n  port-collision: deny\n  duplicate-port-name: deny\n")
HALF = FULL[: FULL.index("  duplicate-port-name")]  # valid YAML on its own: drops a deny
BEFORE = FULL.replace("port-collision: deny", "port-collision: warn")


def _watched(tmp_path: Path) -> PolicyStore:
    shutil.copy(BUNDLED / "mesh-proxy.yaml", tmp_path)
    (tmp_path / "p.yaml").write_text(BEFORE)
    store = PolicyStore(tmp_path)
    assert store.load() and _actions(store) == ("warn", "deny")
    store._pending = store._fingerprint  # what watch() does before its first tick
    return store


def test_the_watcher_waits_for_a_file_to_hold_still(tmp_path: Path) -> None:
    """An editor writing in place is caught between its two writes by one tick: the half file
    never becomes the live policy; the whole file does, once it held still for a tick."""
    store = _watched(tmp_path)
    with (tmp_path / "p.yaml").open("w") as f:
        f.write(HALF)
        f.flush()
        store.tick()  # sees the half file: not yet still
        assert _actions(store) == ("warn", "deny")
        f.write(FULL[len(HALF):])
    store.tick()  # the whole file, seen once
    assert _actions(store) == ("warn", "deny")
    store.tick()  # held still: loaded
    assert _actions(store) == ("deny", "deny")


def test_files_that_move_on_after_holding_still_wait_for_the_next_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher saw the files hold still, and an in-place write starts just before the load
    reads them: what is read is not what held still, so nothing is published until it is."""
    store = _watched(tmp_path)
    (tmp_path / "p.yaml").write_text(FULL)
    store.tick()
    real = webhook.store.fingerprint
    looks = []

    def half_written_after_the_watchers_look(directory: Path) -> Any:
        looks.append(directory)
        if len(looks) == 2:  # the tick looked; the load is about to
            (tmp_path / "p.yaml").write_text(HALF)
        return real(directory)

    monkeypatch.setattr(webhook.store, "fingerprint", half_written_after_the_watchers_look)
    store.tick()
    assert _actions(store) == ("warn", "deny")  # neither the half file nor a stale read
    (tmp_path / "p.yaml").write_text(FULL)
    store.tick()
    store.tick()
    assert _actions(store) == ("deny", "deny")


def test_an_edit_of_the_same_size_within_one_timestamp_tick_is_seen(tmp_path: Path) -> None:
    """warn -> deny keeps the size; filesystems stamp mtimes in coarse ticks."""
    store = _watched(tmp_path)
    path = tmp_path / "p.yaml"
    stamp = path.stat()
    path.write_text(FULL)
    assert path.stat().st_size == stamp.st_size
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert store.changed()
    store.poll()
    assert _actions(store) == ("deny", "deny")


def test_a_worker_booting_during_a_bad_update_keeps_the_inherited_set(tmp_path: Path) -> None:
    """gunicorn stops the whole server when a worker fails to boot: a worker that restarts
    (SIGKILL, --max-requests) while the files are invalid must boot with the last good set,
    which it inherits from the master's store."""
    from webhook.server.app import create_app
    from webhook.errors import PolicyError
    from webhook.server.settings import Settings

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
