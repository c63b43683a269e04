"""ktape-client: Kalshi order-book history from ktape, exact, in Python.

    from ktape_client import Client
    client = Client()                        # key from KTAPE_API_KEY
    book = client.orderbook("KXHIGHCHI-26NOV24-B45.5")
    df = client.deltas("KXHIGHCHI-26NOV24-B45.5", start="2026-11-24T00:00:00Z").to_df()
    client.datasets.download(data_type="book_changes", series_ticker="KXHIGHCHI",
                             start_date="2026-11-24", dest_dir="data")
"""

from ktape_client.aio import AsyncClient, Change, CreatedKey, Gap
from ktape_client.book import Book, Continuity, Level
from ktape_client.datasets import AsyncDatasets, DatasetCost, DownloadResult
from ktape_client.errors import (
    AuthenticationError,
    ChecksumMismatchError,
    DeadlineExceededError,
    DownloadError,
    InsufficientCreditsError,
    InvalidArgumentError,
    KtapeError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    SlowConsumerError,
    UnavailableError,
)
from ktape_client.files import FileResult
from ktape_client.pages import AsyncPages
from ktape_client.sync import Client, Pages

__all__ = ["AsyncClient", "AsyncDatasets", "AsyncPages", "AuthenticationError", "Book",
           "Change", "ChecksumMismatchError", "Client", "Continuity", "CreatedKey", "DatasetCost",
           "DeadlineExceededError", "DownloadError", "DownloadResult", "FileResult", "Gap",
           "InsufficientCreditsError", "InvalidArgumentError", "KtapeError", "Level",
           "NotFoundError", "Pages", "PermissionDeniedError", "RateLimitedError",
           "SlowConsumerError", "UnavailableError"]
