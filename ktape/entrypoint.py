"""The common start of every service process: settings, logging, asyncio.run.

One place turns a configuration error into a single line naming the variable (exit 2)
instead of a traceback, for queryd, billingd, ingestd and the CLI helpers.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from ktape.config import ConfigError, Settings, load_settings
from ktape.log import configure_logging


def settings_or_report(component: str,
                       validate: Callable[[], object] | None = None) -> Settings | None:
    """The settings, or None after printing the one-line error naming the variable."""
    try:
        settings = load_settings()
        if validate is not None:
            validate()
    except ConfigError as exc:
        print(f"{component}: configuration error: {exc}", file=sys.stderr)
        return None
    return settings


def run_service(component: str, main: Callable[[Settings], Awaitable[int]],
                validate: Callable[[], object] | None = None) -> int:
    """Load settings (and `validate` extra ones), configure logging, run `main`."""
    settings = settings_or_report(component, validate)
    if settings is None:
        return 2
    configure_logging(component=component)
    return asyncio.run(main(settings))
