"""Client: AsyncClient's calls, blocking. One private event loop on a daemon thread runs
the async implementation; nothing here is a second implementation of a call."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from typing import Any

from ktape_client.aio import AsyncClient
from ktape_client.pages import AsyncPages


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="ktape-client")
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self.run(agen.aclose())


class Pages:
    """AsyncPages, blocking: iterate, or `to_df()` / `to_polars()` / `to_arrow()`."""

    def __init__(self, pages: AsyncPages, loop: _Loop) -> None:
        self._pages, self._loop = pages, loop

    def __iter__(self) -> Iterator[Any]:
        return self._loop.iterate(self._pages.__aiter__())

    def to_df(self) -> Any:
        """Every page as one pandas DataFrame (see AsyncPages.to_df)."""
        return self._loop.run(self._pages.to_df())

    def to_arrow(self) -> Any:
        """Every page as one pyarrow Table (see AsyncPages.to_arrow)."""
        return self._loop.run(self._pages.to_arrow())

    def to_polars(self) -> Any:
        """Every page as one polars DataFrame (see AsyncPages.to_polars)."""
        return self._loop.run(self._pages.to_polars())


class _Blocking:
    """Any async object's methods, blocking: coroutines are run to their result on the
    private loop, async generators become iterators, AsyncPages become Pages, and an
    attribute marked `blocking_namespace` (like `client.datasets`) gets the same wrapper.
    The one place that turns async into sync, for the client and its namespaces alike."""

    def __init__(self, target: Any, loop: _Loop) -> None:
        self._target, self._loop = target, loop

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._target, name)
        if getattr(type(member), "blocking_namespace", False):
            return _Blocking(member, self._loop)
        if name.startswith("_") or not callable(member):
            return member

        def call(*args: Any, **kwargs: Any) -> Any:
            if inspect.isasyncgenfunction(member):
                return self._loop.iterate(member(*args, **kwargs))
            result = member(*args, **kwargs)
            if isinstance(result, AsyncPages):
                return Pages(result, self._loop)
            return self._loop.run(result) if inspect.isawaitable(result) else result

        call.__name__ = name
        call.__doc__ = member.__doc__
        return call

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(n for n in dir(self._target)
                                             if not n.startswith("_"))})


class Client(_Blocking):
    """The same methods as AsyncClient (see there), returning values instead of
    awaitables: `Pages` for paged results, plain iterators for streams, and
    `client.datasets` likewise."""

    def __init__(self, api_key: str | None = None, target: str = "localhost:8080",
                 **options: Any) -> None:
        loop = _Loop()
        super().__init__(loop.run(_make(api_key, target, options)), loop)

    def __repr__(self) -> str:
        return repr(self._target).replace("AsyncClient", "Client", 1)

    def close(self) -> None:
        """Close the channel and stop the private loop; `with Client() as c:` does it."""
        self._loop.run(self._target.close())
        self._loop.loop.call_soon_threadsafe(self._loop.loop.stop)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(api_key: str | None, target: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(api_key, target, **options)  # the channel binds to this loop
