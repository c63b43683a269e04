"""ktape-client: Kalshi order-book history from ktape, exact, in Python.

    from ktape_client import Client
    client = Client()                        # key from KTAPE_API_KEY
    book = client.orderbook("KXHIGHCHI-26NOV24-B45.5")
    df = client.deltas("KXHIGHCHI-26NOV24-B45.5", start="2026-11-24T00:00:00Z").to_df()
"""

from ktape_client.aio import AsyncClient, Change
from ktape_client.book import Book, Continuity, Level
from ktape_client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InsufficientCreditsError,
    InvalidArgumentError,
    KtapeError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)
from ktape_client.sync import Client, Pages

__all__ = ["AsyncClient", "AuthenticationError", "Book", "Change", "Client", "Continuity",
           "DeadlineExceededError", "InsufficientCreditsError", "InvalidArgumentError",
           "KtapeError", "Level", "NotFoundError", "Pages", "PermissionDeniedError",
           "RateLimitedError", "UnavailableError"]
