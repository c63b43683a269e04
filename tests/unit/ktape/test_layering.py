"""The layering rule (STYLE: services never import each other; `ktape/`, the shared
floor, never imports a service), checked on the source, and the CLI's hand-off to the
services' own entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("ingestd", "queryd", "billingd", "datasetd")


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["ktape", *SERVICES])
def test_no_package_imports_a_service_but_itself(package: str) -> None:
    offenders = {str(path.relative_to(ROOT)): sorted(
        (_imported_packages(path) & set(SERVICES)) - {package})
        for path in (ROOT / package).rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("command", ["backfill", "keys"])
def test_ktape_hands_service_commands_to_their_own_process(command: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ktape", command, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"ktape {command}" in done.stdout
