"""Where `ktape up`'s children log: every line to its own file, the few that matter on
the console.

Why: a terminal that scrolls with QuestDB's internal lines every 200 ms hides what a user
needs (the ready banner, the demo key, a real warning). Each child's whole output goes to
`<data dir>/logs/<component>.log` (rotated at 50 MB, one old file kept) — `ktape logs
COMPONENT` follows it — and the console gets only warnings and errors: from our
services' JSON lines by their level, from QuestDB by its level letter (E, C), from Envoy
by its `[warning]`/`[error]`/`[critical]` tag. Console lines are rendered readably
(`time component level event key=value`), not as raw JSON.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import IO, Any

MAX_BYTES = 50 << 20
SHOWN_LEVELS = frozenset({"warning", "error", "critical", "exception"})
# QuestDB: "2026-12-01T12:00:00.123456Z E i.q.c.TableWriter ..." (I, A, E, C)
_QUESTDB = re.compile(r"^\S+Z ([IAEC]) ")
# Envoy: "[2026-12-01 12:00:00.123][12][warning][config] ..."
_ENVOY = re.compile(r"^\[[^\]]+\]\[\d+\]\[(\w+)\]")


def level_of(line: str) -> tuple[str, dict[str, Any] | None]:
    """The line's level ("info" when it names none) and, for JSON, its fields."""
    if line.startswith("{") and line.endswith("}"):
        try:
            fields = json.loads(line)
        except ValueError:
            return "info", None
        if isinstance(fields, dict):
            return str(fields.get("level", "info")).lower(), fields
    if match := _QUESTDB.match(line):
        return {"E": "error", "C": "critical"}.get(match.group(1), "info"), None
    if match := _ENVOY.match(line):
        return match.group(1).lower(), None
    return "info", None


def readable(component: str, fields: dict[str, Any]) -> str:
    """One JSON log line as `time component level event key=value ...`."""
    when = str(fields.get("timestamp", ""))[11:19]
    rest = " ".join(f"{k}={v}" for k, v in fields.items()
                    if k not in ("timestamp", "level", "event", "component", "logger"))
    return f"{when} {component:<9} {fields.get('level', ''):<7} {fields.get('event', '')} {rest}"


class ChildLogs:
    """The supervisor's output sink (`Supervisor(sink=ChildLogs(dir))`)."""

    def __init__(self, directory: Path, console: IO[str] | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.console = console or sys.stderr
        self._files: dict[str, IO[str]] = {}

    def path(self, component: str) -> Path:
        return self.directory / f"{component}.log"

    def __call__(self, component: str, line: str) -> None:
        self._write(component, line)
        level, fields = level_of(line)
        if level in SHOWN_LEVELS:
            shown = readable(component, fields) if fields else f"{component:<9} {line}"
            print(shown, file=self.console, flush=True)

    def _write(self, component: str, line: str) -> None:
        out = self._files.get(component)
        if out is None or out.tell() > MAX_BYTES:
            if out is not None:
                out.close()
                self.path(component).replace(self.path(component).with_suffix(".log.1"))
            out = self._files[component] = open(self.path(component), "a", buffering=1)  # noqa: SIM115
        out.write(line + "\n")

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files.clear()
