"""Audit the installed dependency set for known vulnerabilities (pip-audit), honestly.

Usage: python .ci/audit.py PIP_AUDIT PROJECT_PYTHON

The dependency set is the project's virtualenv, frozen (``pip freeze``, the editable project
itself left out). pip-audit asks PyPI's per-version JSON API or OSV for each pinned package.
Where neither can be reached it *skips* the package and still prints "No known
vulnerabilities found"; that is not a pass. So this script:

- fails (exit 1) when any vulnerability is found;
- for packages pip-audit skipped, asks PyPI's project JSON (``/pypi/NAME/json``), whose
  ``vulnerabilities`` list covers the latest release: a package pinned at the latest release
  is audited that way;
- reports every package it could not audit, with the reason, and then exits 0 with a clear
  "INCOMPLETE" line, or 1 if PODGATE_AUDIT_STRICT=1 (for machines that should reach the
  databases).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any


def frozen(python: str) -> list[str]:
    out = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "==" in line and not line.startswith("-e")]


def normalize(name: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_audit(tool: str, requirements: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(requirements) + "\n")
    try:
        proc = subprocess.run([tool, "-r", f.name, "--no-deps", "--disable-pip", "--progress-spinner", "off",
                               "-f", "json"], capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(f.name)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        sys.exit(f"audit: pip-audit gave no report (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def pypi_project(name: str) -> tuple[str | None, list[dict[str, Any]], str]:
    """(latest version, its vulnerabilities, error) from PyPI's project JSON."""
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=20) as resp:
            data = json.load(resp)
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        return None, [], f"PyPI project JSON unreachable: {exc}"
    return data["info"]["version"], data.get("vulnerabilities") or [], ""


def main(tool: str, python: str) -> int:
    requirements = frozen(python)
    pinned = {normalize(line.split("==")[0]): line.split("==")[1] for line in requirements}
    report = pip_audit(tool, requirements)
    found: list[str] = []
    unaudited: list[str] = []
    audited = 0
    for dep in report.get("dependencies", []):
        name = dep["name"]
        version = dep.get("version") or pinned.get(normalize(name), "?")  # skipped entries carry no version
        for vuln in dep.get("vulns", []):
            found.append(f"{name} {version}: {vuln['id']} (fixed in {', '.join(vuln.get('fix_versions') or ['?'])})")
        if "skip_reason" not in dep:
            audited += 1
            continue
        latest, vulns, error = pypi_project(name)
        if error:
            unaudited.append(f"{name} {version}: {dep['skip_reason']}; {error}")
        elif latest != version:
            unaudited.append(f"{name} {version}: {dep['skip_reason']}; PyPI's project JSON covers only the "
                             f"latest release ({latest})")
        else:
            audited += 1
            found += [f"{name} {version}: {v.get('id')} (fixed in {', '.join(v.get('fixed_in') or ['?'])})"
                      for v in vulns if not v.get("withdrawn")]
    total = len(report.get("dependencies", []))
    print(f"audit: {total} pinned packages, {audited} audited, {len(unaudited)} not audited, "
          f"{len(found)} known vulnerabilities")
    for line in found:
        print(f"  VULNERABLE {line}")
    for line in unaudited:
        print(f"  not audited: {line}")
    if found:
        return 1
    if unaudited:
        print("audit: INCOMPLETE: the vulnerability databases (PyPI per-version JSON, OSV) could not be reached "
              "for the packages above; this is not a clean bill of health.")
        return 1 if os.environ.get("PODGATE_AUDIT_STRICT") == "1" else 0
    print("audit: clean")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
