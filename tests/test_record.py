"""``podgate serve --record``: requests become files, capped exactly across processes, written
atomically, userInfo redacted; and the recordings become passing test cases."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from webhook.cli.commands import main
from webhook.server.record import CLAIMS, REDACTED_USER, Recorder, RecordOptions
from webhook.review import parse_review
from webhook.server.settings import Settings

from .conftest import recorded, review_for
from .live_server import live_server
from .test_rules import ctr, pod, port


def body_of(review: dict) -> bytes:
    return orjson.dumps(review)


def recordings(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.request.json"))


def test_names_redaction_and_cap(tmp_path: Path) -> None:
    rec = Recorder(RecordOptions(tmp_path / "rec", max_files=3))
    review = recorded("0011_mutate_CREATE_default_dryrun-pod")
    assert review["request"]["userInfo"]["username"] == "admin"
    generated = recorded("0015_mutate_CREATE_default_gen-GEN")
    written = [rec.record("mutate", body_of(review), parse_review(review)),
               rec.record("validate", body_of(generated), parse_review(generated))]
    assert [p.name for p in written if p] == ["000000_mutate_CREATE_default_dryrun-pod_dryrun.request.json",
                                              "000001_validate_CREATE_default_gen-GEN.request.json"]
    saved = json.loads(written[0].read_text())
    assert saved["request"]["userInfo"] == REDACTED_USER
    del saved["request"]["userInfo"], review["request"]["userInfo"]
    assert saved == review  # everything else exactly as received
    for _ in range(3):
        rec.record("validate", body_of(review), parse_review(review))
    assert len(recordings(tmp_path / "rec")) == 3 and rec.full
    assert not [p for p in (tmp_path / "rec").iterdir() if p.name.endswith(".tmp")]
    # a restarted server (a new Recorder on the same directory) is still capped
    again = Recorder(RecordOptions(tmp_path / "rec", max_files=3))
    assert again.full and again.record("validate", body_of(review), parse_review(review)) is None


def test_user_info_kept_on_request_and_size_cap(tmp_path: Path) -> None:
    review = recorded("0002_validate_CREATE_default_single")
    body = body_of(review)
    rec = Recorder(RecordOptions(tmp_path, max_files=10, max_bytes=len(body), user_info=True))
    path = rec.record("validate", body, parse_review(review))
    assert path is not None and json.loads(path.read_text())["request"]["userInfo"] == review["request"]["userInfo"]
    big = review_for(pod(ctr("app", *[port(8000 + i) for i in range(200)])))
    assert rec.record("validate", body_of(big), parse_review(big)) is None and rec.skipped == 1
    assert len(recordings(tmp_path)) == 1


def _record_many(directory: str, count: int) -> None:
    review = recorded("0002_validate_CREATE_default_single")
    rec = Recorder(RecordOptions(Path(directory), max_files=50))
    for _ in range(count):
        rec.record("validate", body_of(review), parse_review(review))


def test_cap_is_exact_across_processes(tmp_path: Path) -> None:
    """Four processes racing for 50 slots (as gunicorn workers would) write exactly 50 files."""
    context = multiprocessing.get_context("spawn")  # fork in a threaded test process can deadlock
    procs = [context.Process(target=_record_many, args=(str(tmp_path), 30)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)  # each spawned process imports podgate anew: seconds on a loaded machine
        assert p.exitcode == 0
    files = recordings(tmp_path)
    assert len(files) == 50
    assert sorted(int(f.name[:6]) for f in files) == list(range(50))
    for f in files:
        assert json.loads(f.read_text())["kind"] == "AdmissionReview"
    assert len(os.listdir(tmp_path / CLAIMS)) == 50
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_settings_round_trip() -> None:
    settings = Settings(record_dir=Path("/tmp/rec"), record_max_files=7, record_max_bytes=99, record_user_info=True)
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env({}).record_dir is None


def test_recorded_live_traffic_becomes_a_passing_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real gunicorn with two workers over TLS records; --init turns the files into cases."""
    record_dir = tmp_path / "recorded"
    labels = tmp_path / "namespaces.yaml"
    labels.write_text("shop: {podgate.io/mesh: enabled}\n")
    reviews = [review_for(pod(ctr("app", port(8080)), ctr("metrics", port(8080))), uid=f"u{i}") for i in range(4)]
    reviews += [review_for(pod(ctr("web", port(8080))), namespace="shop", uid=f"m{i}") for i in range(4)]
    with live_server(tmp_path, "--record", str(record_dir), "--record-max", "6",
                     "--namespace-labels", str(labels)) as server:
        assert f"recording AdmissionReview requests to {record_dir} (at most 6 files, userInfo redacted)" \
            in server.output()
        session = server.session()

        def send(i: int) -> int:
            path = "/validate" if i < 4 else "/mutate"
            r = session.post(f"{server.url}{path}", data=json.dumps(reviews[i]),
                             headers={"Content-Type": "application/json"}, timeout=10)
            return r.status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(send, range(8))) == [200] * 8
    files = recordings(record_dir)
    assert len(files) == 6
    assert {f.name.split("_")[1] for f in files} <= {"validate", "mutate"}
    for f in files:
        assert json.loads(f.read_text())["request"]["userInfo"] == REDACTED_USER

    suite = tmp_path / "suite"
    (suite).mkdir()
    (suite / "podgate-test.yaml").write_text("apiVersion: podgate.io/v1alpha1\nkind: TestSuite\n"
                                             "namespaceLabels:\n  shop: {podgate.io/mesh: enabled}\ncases: []\n")
    assert main(["test", str(suite), "--init", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.count("added case") == 6
    assert main(["test", str(suite)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "6 cases: 6 passed, 0 failed"
    assert "denied (port-collision)" not in out  # the run prints PASS lines, not the init summary


def test_every_setting_round_trips_through_the_environment() -> None:
    from dataclasses import fields

    from webhook.server.settings import ENVIRONMENT

    assert {f.name for f in fields(Settings)} == {field for field, _, _ in ENVIRONMENT.values()}
    changed = Settings(policy_dir=Path("/p"), reload_interval=0.5, max_body_bytes=10, namespace_labels_file=Path("/n"),
                       kube_api="in-cluster", namespace_fallback="no-labels", namespace_resync=60.0, metrics=False,
                       record_dir=Path("/r"), record_max_files=3, record_max_bytes=4, record_user_info=True,
                       bench_baseline=True, request_timeout=5.0)
    assert Settings.from_env(changed.to_env()) == changed
    assert Settings().to_env() == {}
