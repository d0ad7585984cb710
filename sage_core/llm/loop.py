"""``BackgroundLoop``: an asyncio event loop on a daemon thread, so synchronous code
(operators' ``map_batch`` on plain threads) can call the async clients."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from sage_core.llm.client_errors import InferenceError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class BackgroundLoop:
    """An asyncio event loop on a daemon thread, for calling async clients from
    synchronous code (operator ``map_batch`` methods run on plain threads).

    ``run(coro)`` blocks until the coroutine finishes on the loop and returns its
    result (or raises its exception). ``close()`` stops the loop and joins the thread.
    """

    def __init__(self, name: str = "sage-llm-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        if self.loop.is_closed():
            coro.close()
            raise InferenceError("the background loop is closed", endpoint="(local)")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Cancel the loop's remaining tasks, stop it and join its thread
        (idempotent)."""
        if self.loop.is_closed():
            return

        async def cancel_pending() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.get_running_loop().shutdown_asyncgens()

        if self._thread.is_alive():
            try:
                self.run(cancel_pending(), timeout_s=10)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning(
                    "tasks of %s did not finish cancelling", self._thread.name
                )
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()
