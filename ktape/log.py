"""Structured logging for every ktape process.

Why one module: every process (supervisor, simulator, services) must log the same way so
that one `jq` filter reads them all. JSON lines when stdout is not a TTY (production, CI,
the supervisor's pipes), key=value console output on a TTY. Event names are
`noun.past_verb` (`book.gap_detected`); variables are fields, never baked into the text.

Library modules call `get_logger(__name__)` and never configure anything; entry points
call `configure_logging()` once.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(
    *, level: str | None = None, json: bool | None = None, component: str | None = None
) -> None:
    """Configure structlog and the stdlib root logger once per process.

    `level` defaults to `KTAPE_LOG_LEVEL` (INFO); `json` defaults to "stdout is not a
    TTY" and can be forced with `KTAPE_LOG_FORMAT=json|console`. `component` is bound to
    every line so merged supervisor output stays attributable.
    """
    global _configured
    level_name = (level or os.environ.get("KTAPE_LOG_LEVEL", "INFO")).upper()
    numeric_level = logging.getLevelName(level_name)
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    if json is None:
        forced = os.environ.get("KTAPE_LOG_FORMAT", "").lower()
        json = forced == "json" if forced in ("json", "console") else not sys.stdout.isatty()

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if component:
        shared.insert(1, _bind_component(component))
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Third-party libraries log through the stdlib; route them to the same stream.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stdout,
                        format="%(levelname)s %(name)s %(message)s", force=True)
    _configured = True


def _bind_component(component: str) -> Any:
    def processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("component", component)
        return event

    return processor


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog bound logger; `name` becomes the `logger_name` field."""
    if name is not None:
        initial.setdefault("logger_name", name)
    return structlog.get_logger(**initial)
