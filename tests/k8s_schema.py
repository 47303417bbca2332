"""Strict Kubernetes schema checks with kubernetes-validate's schemas, compiled once per kind.

``kubernetes_validate.validate`` re-reads and re-compiles the definitions on every call (about
12 ms); the corpus tests check hundreds of Pods, so the compiled validator is cached here.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import Registry, Resource, schema_contents

VERSION = "1.36"  # the version of policies/kubernetes.schema.json (a test holds them equal)


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    group = api_version.split("/")[0].split(".")[0] + "-" + api_version.split("/")[1] if "/" in api_version \
        else api_version
    folder = f"kubernetes-json-schema/v{VERSION}.0-local-strict"
    schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", VERSION)
    definitions = schema_contents(f"{folder}/_definitions.json", VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def errors(obj: dict[str, Any]) -> list[str]:
    """Strict-schema problems of one object, as ``path: message`` lines (empty when valid)."""
    validator = _validator(obj["kind"], obj["apiVersion"])
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def is_valid(obj: dict[str, Any]) -> bool:
    return not errors(obj)


def check(obj: dict[str, Any]) -> None:
    """Raise like kubernetes_validate.validate(obj, VERSION, strict=True)."""
    problems = errors(obj)
    if problems:
        raise AssertionError(f"{obj['kind']} fails the strict Kubernetes {VERSION} schema:\n" + "\n".join(problems))


assert kubernetes_validate  # the schemas come from this package
