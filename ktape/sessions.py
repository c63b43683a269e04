"""The console's session cookie, as both billingd (which issues it) and queryd (which
admits playground calls by it) read it from gRPC metadata (Envoy passes `Cookie`)."""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any

COOKIE = "ktape_session"  # HttpOnly: the session itself
SIGNED_IN_COOKIE = "ktape_signed_in"  # "1" beside it, readable by the page (no secret)


def session_cookie(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The `ktape_session` cookie value of a call, if it sent one."""
    for key, value in metadata or ():
        if key == "cookie":
            try:
                morsel = SimpleCookie(str(value)).get(COOKIE)
            except CookieError:
                return None
            return morsel.value if morsel is not None and morsel.value else None
    return None
