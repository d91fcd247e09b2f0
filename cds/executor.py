"""Where stages hand work: an executor interface and its in-process implementation.

Stages submit plain callables; they never create threads themselves. A
distributed executor (e.g. a Ray cluster for multi-GPU sites and archive
backfills) can replace ``InProcessExecutor`` behind the same protocol
without changing a stage.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Executor(Protocol):
    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class InProcessExecutor:
    """A bounded thread pool in the node's own process."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cds-work")

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
