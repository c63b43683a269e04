"""Find a Java runtime that the pinned QuestDB release supports.

Why: machines here carry several JDKs (Debian's 17, a Temurin 25); QuestDB 9.3 runs on
17+, 9.4+ needs 25. We pick the lowest installed version that satisfies the pin's
minimum (most tested for that release), honouring KTAPE_JAVA_HOME / JAVA_HOME first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class JavaRuntime:
    executable: Path
    major: int


def java_major(executable: Path) -> int | None:
    try:
        proc = subprocess.run(
            [str(executable), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(proc.stderr + proc.stdout)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    return major


def _candidates() -> list[Path]:
    found: list[Path] = []
    for var in ("KTAPE_JAVA_HOME", "JAVA_HOME"):
        home = os.environ.get(var)
        if home:
            found.append(Path(home) / "bin" / "java")
    jvm_root = Path("/usr/lib/jvm")
    if jvm_root.is_dir():
        found.extend(sorted(p / "bin" / "java" for p in jvm_root.iterdir() if p.is_dir()))
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def find_java(min_major: int, max_major: int | None = None) -> JavaRuntime:
    """The preferred Java whose major version lies in [min_major, max_major]."""
    explicit = os.environ.get("KTAPE_JAVA_HOME")
    usable: list[JavaRuntime] = []
    for exe in _candidates():
        major = java_major(exe)
        if major is None or major < min_major or (max_major is not None and major > max_major):
            continue
        runtime = JavaRuntime(exe, major)
        if explicit and exe == Path(explicit) / "bin" / "java":
            return runtime
        usable.append(runtime)
    if not usable:
        raise RuntimeError(
            f"no Java >= {min_major} found (looked at KTAPE_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, PATH)"
        )
    return min(usable, key=lambda r: r.major)
