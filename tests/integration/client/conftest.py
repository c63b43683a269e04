"""The client as a user gets it: installed from the source tree into a venv of its own."""

from __future__ import annotations

import os
import subprocess
import venv
from collections.abc import Mapping
from pathlib import Path

import pytest

from ktape.runtime.pins import REPO_ROOT


@pytest.fixture(scope="session")
def client_python(tmp_path_factory) -> Path:
    """A venv with only ktape-client[pandas] installed from the source tree: no ktape
    beside it, so a client that imported anything of the server would fail here."""
    root = tmp_path_factory.mktemp("client-venv")
    venv.EnvBuilder(with_pip=True).create(root)
    python = root / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                    f"{REPO_ROOT / 'clients' / 'python'}[pandas]"], check=True, timeout=600,
                   env=_clean(os.environ))  # a PYTHONPATH could satisfy [pandas] from outside
    return python


@pytest.fixture
def client_env(edge) -> dict[str, str]:
    """The environment of a client process: none of the tests' KTAPE_* variables and no
    PYTHONPATH (nothing of the repository importable), only the edge test account's key
    (as KTAPE_API_KEY, as a user sets it)."""
    return {**_clean(os.environ), "KTAPE_API_KEY": edge.api_key}


def _clean(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the tests' KTAPE_* variables and without PYTHONPATH."""
    return {k: v for k, v in env.items() if not k.startswith("KTAPE") and k != "PYTHONPATH"}
