"""Hostile and careless input files: policies, manifests, requests, suites.

Each attack is one a careless policy author or a hostile file would make: floats where integers
belong, deep nesting, control characters, endless files, billion-laughs aliases, FIFOs and
devices in a watched policy directory, lists of a million entries. The command line answers each
with exit code 2 and one line on stderr naming the file; loading refuses them with PolicyError
and keeps the last good set; nothing raises anything else, blocks, or runs without bound.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import threading
import time
from pathlib import Path

import pytest

from webhook.cli.commands import main
from webhook.errors import PolicyError
from webhook.files import POLICY_FILE_MAX, InputFileError, read_bytes
from webhook.policy import load_policy_set
from webhook.store import PolicyStore, fingerprint
from webhook.yamlpos import MAX_DEPTH, BoundsError, load_documents

from .conftest import REPO

POD = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: web}
    spec:
      containers: [{name: app, image: app}]
    """)
DEEP_JSON = "[" * 600 + "]" * 600
DEEP_YAML = "a:\n" + "".join("  " * i + "- \n" for i in range(1, 300))
FLOW_DEEP = "[" * 2000 + "]" * 2000
# 1,000 aliases of a 1 MB string: a 1 MB file that prints as a gigabyte
WIDE_LAUGHS = ("apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {a: &s " + "x" * 1_000_000 + "}}\n"
               "spec:\n  containers: [{name: app, image: app, args: [" + ",".join(["*s"] * 1000) + "]}]\n")


def billion_laughs(prefix: str = "", key: str = "lol") -> str:
    """Nine levels of ten aliases each: 10^9 strings once constructed and walked."""
    lines = [f'{prefix}{key}0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"{prefix}{key}{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, name: str) -> str:
    """The single line on stderr, which names the file; no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    assert name in lines[0] and "Traceback" not in err
    return lines[0]


# --- the YAML reader's bounds -----------------------------------------------------------------

@pytest.mark.parametrize("text, problem", [
    (DEEP_JSON, f"nested deeper than {MAX_DEPTH} levels"),
    (FLOW_DEEP, f"nested deeper than {MAX_DEPTH} levels"),
    (DEEP_YAML, f"nested deeper than {MAX_DEPTH} levels"),
    ("a: 1\nb: x\x00y\n", "control character #x0000"),
    ("a: 1\nb: \x1b[31mred\n", "control character #x001b"),
    (billion_laughs(), "aliases expand to more than the file holds"),
    (WIDE_LAUGHS, "aliases expand to more than the file holds"),
    ("a: &a [*a]\n", "alias *a refers to a node that contains it"),
    ("a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50 + "\n", "through alias *a"),
])
def test_reader_bounds_are_yaml_errors_with_a_line(text: str, problem: str) -> None:
    with pytest.raises(BoundsError) as caught:
        load_documents(text)
    assert problem in caught.value.problem
    assert caught.value.problem_mark is not None


def test_control_character_line_and_column() -> None:
    with pytest.raises(BoundsError) as caught:
        load_documents("a: 1\nb: 2\nc: x\x07\n")
    assert caught.value.problem_mark.line == 2
    assert "(column 5)" in caught.value.problem


def test_ordinary_anchors_and_merge_keys_still_load() -> None:
    docs = load_documents("base: &b {cpu: 1, memory: 2}\nx: {<<: *b, cpu: 3}\ny: *b\n"
                          + "".join(f"k{i}: *b\n" for i in range(500)))
    assert docs[0].data["x"] == {"cpu": 3, "memory": 2} and docs[0].data["k499"] == {"cpu": 1, "memory": 2}


def test_reads_stop_one_byte_past_the_bound(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(InputFileError, match="larger than 1 MiB"):
        read_bytes("/dev/zero", 1024 * 1024)
    assert time.monotonic() - started < 5
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1001)
    with pytest.raises(InputFileError, match="larger than 1000 bytes"):
        read_bytes(big, 1000)
    assert read_bytes(big, 1001) == b"x" * 1001


def test_regular_only_never_opens_a_fifo_or_a_device(tmp_path: Path) -> None:
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    (tmp_path / "z.yaml").symlink_to("/dev/zero")
    result: list[str] = []

    def read() -> None:
        for name in ("p.yaml", "z.yaml"):
            try:
                read_bytes(tmp_path / name, 100, regular_only=True)
            except InputFileError as exc:
                result.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert result == ["not a regular file (a FIFO)", "not a regular file (a character device)"]


# --- policy files -----------------------------------------------------------------------------

def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    for name in ("default.yaml", "mesh-proxy.yaml"):
        shutil.copy(REPO / "policies" / name, directory / name)
    return directory


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


HOSTILE_POLICIES = {
    "float-port": ("mesh-proxy.yaml", "15053,", "15053.0,", "/spec/proxy/reservedPorts/8: 15053.0 is not of type 'integer'"),
    "float-uid": ("mesh-proxy.yaml", "uid: 1337", "uid: 1337.0", "/spec/proxy/uid: 1337.0 is not of type 'integer'"),
    "bool-port": ("mesh-proxy.yaml", "inbound: 15006", "inbound: true", "/spec/injection/redirect/ports/inbound"),
    "float-container-port": ("mesh-proxy.yaml", "containerPort: 15021", "containerPort: 15021.0", "is not of type 'integer'"),
    "port-out-of-range": ("mesh-proxy.yaml", "outbound: 15001", "outbound: 70000", "70000 is greater than the maximum"),
    "million-ports": ("mesh-proxy.yaml", "reservedPorts: [15000,", "reservedPorts: [" + "1, " * 2000,
                      "/spec/proxy/reservedPorts: 2009 entries, more than the 1024 allowed here"),
    "too-big": ("mesh-proxy.yaml", "reservedPorts: [15000,", "reservedPorts: [" + "15000, " * 40000,
                "cannot read: larger than 256 KiB"),
    "nested": ("default.yaml", "rules:", "x: " + FLOW_DEEP + "\n  rules:", f"nested deeper than {MAX_DEPTH} levels"),
    "nul": ("default.yaml", "name: default", "name: def\x00ault", "control character #x0000"),
    "laughs": ("default.yaml", "spec:\n", billion_laughs() + "spec:\n", "aliases expand to more than the file holds"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_POLICIES))
def test_hostile_policy_files_are_refused_with_a_reason(tmp_path: Path, case: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    file, old, new, expected = HOSTILE_POLICIES[case]
    directory = policy_dir(tmp_path)
    edit(directory / file, old, new)
    started = time.monotonic()
    with pytest.raises(PolicyError) as caught:
        load_policy_set(directory)
    assert expected in str(caught.value)
    assert time.monotonic() - started < 20
    # the command line: exit 2, the reason on stderr; lint: the error as a finding
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD)
    code, _, err = run_cli(capsys, "check", "--policies", str(directory), str(pod))
    assert code == 2 and expected in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "policy", "lint", str(directory))
    assert code == 1 and "error" in out and not err


def test_a_laughing_value_is_not_expanded_into_the_schema_message(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Aliases within the bound, in a field the schema refuses: the message quotes a bounded part."""
    directory = policy_dir(tmp_path)
    value = "[" + ", ".join(['"' + "y" * 1000 + '"'] * 200) + "]"
    edit(directory / "default.yaml", "  description: Shared", f"  description: &d {value}\n  x: Shared")
    edit(directory / "default.yaml", "  exemptions:\n", "  match: {namespaces: *d, namespaceSelector: *d}\n"
                                                       "  exemptions:\n    podSelector: *d\n")
    started = time.monotonic()
    code, out, err = run_cli(capsys, "policy", "lint", str(directory))
    assert code == 1 and not err and out.count("error:") >= 3
    assert max(len(line) for line in out.splitlines()) < 2500 and time.monotonic() - started < 20
    code, _, err = run_cli(capsys, "check", "--policies", str(directory), "-")
    assert code == 2 and max(len(line) for line in err.splitlines()) < 2500


def test_non_regular_entries_are_skipped_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = policy_dir(tmp_path)
    os.mkfifo(directory / "fifo.yaml")
    (directory / "zero.yaml").symlink_to("/dev/zero")
    (directory / "gone.yaml").symlink_to(tmp_path / "nowhere")
    policies = load_policy_set(directory)
    assert [w.split(": skipped: ")[1] for w in policies.warnings] == [
        "not a regular file (a FIFO)", "No such file or directory", "not a regular file (a character device)"]
    code, out, _ = run_cli(capsys, "policy", "lint", str(directory))
    assert code == 0 and "fifo.yaml: warning: skipped: not a regular file (a FIFO)" in out


def test_lint_of_a_fifo_is_refused_not_waited_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "policy", "lint", str(fifo))
    assert code == 2 and "not a policy directory or file (a FIFO)" in one_line_error(err, "policy.yaml")


def test_the_store_keeps_the_last_good_set_and_says_so_once(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    directory = policy_dir(tmp_path)
    store = PolicyStore(directory)
    assert store.load()
    good = store.current
    for case in ("float-port", "nested"):
        file, old, new, _ = HOSTILE_POLICIES[case]
        shutil.copy(REPO / "policies" / file, directory / file)
        edit(directory / file, old, new)
        caplog.clear()
        for _ in range(5):  # ticks: the change is loaded once, and logged once
            store.tick()
        failures = [r for r in caplog.records if "policy reload failed" in r.getMessage()]
        assert len(failures) == 1 and not any(r.exc_info for r in caplog.records)
        assert store.current is good and store.last_error
        shutil.copy(REPO / "policies" / file, directory / file)
    os.mkfifo(directory / "fifo.yaml")
    (directory / "zero.yaml").symlink_to("/dev/zero")
    done = threading.Event()

    def ticks() -> None:
        for _ in range(3):
            store.tick()
        done.set()

    threading.Thread(target=ticks, daemon=True).start()
    assert done.wait(20), "a tick blocked on the FIFO or read /dev/zero"
    assert store.current is not good and not store.last_error
    entries = {name: digest for name, _, digest in fingerprint(directory)}
    assert {"fifo.yaml", "zero.yaml"} <= set(entries)


def test_a_loader_bug_is_logged_once_and_never_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import webhook.store

    directory = policy_dir(tmp_path)
    store = PolicyStore(directory)
    assert store.load()
    good = store.current

    def broken(_directory: object) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(webhook.store, "load_policy_set", broken)
    (directory / "extra.yaml").write_text("# changed\n")
    for _ in range(4):
        store.tick()
    assert store.current is good and "TypeError: a bug" in (store.last_error or "")
    assert sum(bool(r.exc_info) for r in caplog.records) == 1


def test_policy_file_bound_matches_the_reader() -> None:
    assert POLICY_FILE_MAX == 256 * 1024


# --- the command line's input files -----------------------------------------------------------

BAD_INPUTS = {
    "deep.json": (DEEP_JSON, f"nested deeper than {MAX_DEPTH} levels"),
    "deep.yaml": ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: " + FLOW_DEEP + "\n",
                  f"nested deeper than {MAX_DEPTH} levels"),
    "nul.yaml": (POD.replace("name: web", "name: w\x00eb"), "deep.json"[:0] + "control character #x0000"),
    "escape.yaml": (POD.replace("image: app", "image: \x1b[2Japp"), "control character #x001b"),
    "laughs.yaml": (POD + "---\n" + billion_laughs(), "aliases expand to more than the file holds"),
    "wide.yaml": (WIDE_LAUGHS, "aliases expand to more than the file holds"),
}


@pytest.mark.parametrize("command", ["check", "inject"])
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_check_and_inject_refuse_bad_files_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       command: str, name: str) -> None:
    text, expected = BAD_INPUTS[name]
    path = tmp_path / name
    path.write_text(text)
    started = time.monotonic()
    code, out, err = run_cli(capsys, command, str(path))
    assert code == 2, (out[:500], err[:500])
    assert expected in one_line_error(err, name)
    assert len(out) < 100_000 and time.monotonic() - started < 30


@pytest.mark.parametrize("command", ["check", "inject", "review"])
def test_endless_files_are_refused(capsys: pytest.CaptureFixture[str], command: str) -> None:
    started = time.monotonic()
    code, _, err = run_cli(capsys, command, "/dev/zero")
    assert code == 2 and "larger than" in one_line_error(err, "/dev/zero")
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_suites_refuse_bad_files_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    text, expected = BAD_INPUTS[name]
    (tmp_path / name).write_text(text)
    suite = tmp_path / "podgate-test.yaml"
    suite.write_text(f"apiVersion: podgate.io/v1alpha1\nkind: TestSuite\ncases:\n"
                     f"  - {{name: one, manifest: {name}, expect: {{allowed: true}}}}\n")
    code, _, err = run_cli(capsys, "test", str(suite))
    assert code == 2 and expected in one_line_error(err, name)
    # the suite file itself
    suite.write_text(text)
    code, _, err = run_cli(capsys, "test", str(suite))
    assert code == 2 and expected in one_line_error(err, "podgate-test.yaml")


def test_namespace_labels_file_is_bounded_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.yaml"
    labels.write_text(billion_laughs())
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD)
    code, _, err = run_cli(capsys, "check", "--namespace-labels", str(labels), str(pod))
    assert code == 2 and "aliases expand" in one_line_error(err, "labels.yaml")


# --- a real server, its policy directory under attack -----------------------------------------

def test_served_policy_directory_under_attack(tmp_path: Path) -> None:
    """Bad files in a served directory: the workers keep the last good set, workers replaced
    meanwhile boot with it, the server never exits because of a file, says each problem once
    (no traceback), and a FIFO neither stops reloads nor SIGTERM."""
    from .conftest import recorded
    from .live_server import live_server, stop

    directory = policy_dir(tmp_path)
    denied = recorded("0004_validate_CREATE")
    with live_server(tmp_path, "--policies", str(directory), "--reload-interval", "0.2",
                     "--max-requests", "3") as server:
        session = server.session()

        def answer() -> dict:
            response = session.post(f"{server.url}/validate", json=denied, timeout=10)
            assert response.status_code == 200, response.text
            return response.json()["response"]

        before = answer()
        for case in ("float-port", "nested"):
            file, old, new, _ = HOSTILE_POLICIES[case]
            edit(directory / file, old, new)
            time.sleep(1.5)  # several ticks: the change is seen, loaded, refused
            for _ in range(12):  # every worker is replaced a few times (--max-requests 3)
                assert answer()["allowed"] == before["allowed"]
            shutil.copy(REPO / "policies" / file, directory / file)
        os.mkfifo(directory / "fifo.yaml")
        (directory / "zero.yaml").symlink_to("/dev/zero")
        (directory / "extra.yaml").write_text(
            "apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: extra}\n"
            "spec: {match: {namespaces: [extra]}}\n")
        deadline = time.monotonic() + 30
        while "policies loaded from" not in server.output().split("fifo.yaml")[-1] and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(6):
            answer()
        log = server.output()
        assert server.process.poll() is None
        assert "skipped: not a regular file (a FIFO)" in log and "extra" in log
        assert "Traceback" not in log
        # each refused change said once per process that watches (master + live workers), not per tick
        assert 1 <= log.count("15053.0 is not of type 'integer'") <= 12
        started = time.monotonic()
        stop(server.process)
        assert server.process.returncode is not None and time.monotonic() - started < 25


def test_thousands_of_wrong_entries_cost_a_bounded_check() -> None:
    """jsonschema's uniqueItems compares every pair of entries that do not sort, and reports
    every wrong entry: 5,000 namespaces of mixed types took 42 s."""
    from webhook.policy import MAX_SCHEMA_ERRORS, schema_problems

    doc = {"apiVersion": "podgate.io/v1alpha1", "kind": "Policy", "metadata": {"name": "x"},
           "spec": {"match": {"namespaces": [i if i % 2 else f"n{i}" for i in range(5000)]}}}
    started = time.monotonic()
    problems = schema_problems(doc)
    assert len(problems) == MAX_SCHEMA_ERRORS and time.monotonic() - started < 10
    doc["spec"]["match"]["namespaces"] = ["a", "b", "a"]
    assert [message for _, message in schema_problems(doc)] == ["'a' is listed twice"]
