"""The layers contract covers every module of the core: a module added to ``webhook/`` and not
named in pyproject.toml's import-linter contracts would be free to import the server or Flask."""

from __future__ import annotations

import tomllib

from .conftest import REPO

WINGS = {"cli", "server"}  # packages of their own, above the core
ENTRY_POINTS = {"__init__", "__main__"}  # the package itself and `python -m webhook` (the CLI)


def core_modules() -> set[str]:
    package = REPO / "webhook"
    names = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir()
                                                      if p.is_dir() and (p / "__init__.py").exists()}
    return {f"webhook.{name}" for name in names - WINGS - ENTRY_POINTS}


def contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {c["type"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_every_core_module_is_in_the_bottom_layer() -> None:
    bottom = contracts()["layers"]["layers"][-1]
    assert {name.strip() for name in bottom.split(":")} == core_modules()


def test_every_core_module_is_forbidden_http_and_the_wings() -> None:
    forbidden = contracts()["forbidden"]
    assert set(forbidden["source_modules"]) == core_modules()
    assert {"flask", "gunicorn", "webhook.server", "webhook.cli"} <= set(forbidden["forbidden_modules"])
