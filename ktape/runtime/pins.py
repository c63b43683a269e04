"""Read the pinned versions from `infra/pins.env` (the single source of truth)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PINS_FILE = REPO_ROOT / "infra" / "pins.env"
TOOLS_DIR = REPO_ROOT / ".tools"


@cache
def pins() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in PINS_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def questdb_jar() -> Path:
    """Where `infra/install_questdb.sh` put the pinned jar (raises if it did not)."""
    version = pins()["QUESTDB_VERSION"]
    jar = TOOLS_DIR / "questdb" / f"questdb-{version}.jar"
    if not jar.is_file():
        raise FileNotFoundError(f"{jar} is missing: run `make install` (infra/install_questdb.sh)")
    return jar
