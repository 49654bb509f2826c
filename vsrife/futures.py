"""One bounded, thread-safe cache of futures, for values that must be computed once however many threads
ask at the same time: each is computed in the asking thread (:meth:`FutureCache.get`) or on a worker
pool, possibly before anyone asks (:meth:`FutureCache.start`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor


class FutureCache[K: Hashable, V]:
    """Keys to futures, at most ``capacity`` of them: past that the least recently used is dropped (whoever
    holds its future still gets the value). A computation that fails is forgotten, so a later call tries
    again."""

    def __init__(self, capacity: int, pool: ThreadPoolExecutor | None = None) -> None:
        self.capacity = capacity
        self._pool = pool
        self._lock = threading.Lock()
        self._items: OrderedDict[K, Future[V]] = OrderedDict()
        self._taken: dict[K, int] = {}  # how often a key was taken, while it is kept

    def get(self, key: K, compute: Callable[[], V]) -> V:
        """The value of ``key``: computed here by the first caller, waited for by the others, kept."""
        future, owner = self._claim(key, Future)
        if owner:
            try:
                future.set_result(compute())
            except BaseException as error:
                future.set_exception(error)
                self._forget(key, future)
        return future.result()

    def start(self, key: K, compute: Callable[[], V]) -> Future[V]:
        """Compute ``key`` on the pool unless it is known or under way; its future."""
        assert self._pool is not None, "start() needs a pool"
        return self._claim(key, lambda: self._pool.submit(compute))[0]

    def take(self, key: K, compute: Callable[[], V], uses: int = 1) -> V:
        """The value of ``key`` (started on the pool if nobody started it), forgotten once it was taken
        ``uses`` times (or dropped as the least recently used)."""
        future = self.start(key, compute)
        try:
            return future.result()
        finally:
            with self._lock:
                taken = self._taken.get(key, 0) + 1
                if taken >= uses:
                    self._taken.pop(key, None)
                    if self._items.get(key) is future:
                        del self._items[key]
                elif key in self._items:
                    self._taken[key] = taken

    def __len__(self) -> int:
        return len(self._items)

    def _claim(self, key: K, make: Callable[[], Future[V]]) -> tuple[Future[V], bool]:
        with self._lock:
            future = self._items.get(key)
            if future is not None:
                self._items.move_to_end(key)
                return future, False
            future = self._items[key] = make()
            while len(self._items) > self.capacity:
                dropped, _ = self._items.popitem(last=False)
                self._taken.pop(dropped, None)
            return future, True

    def _forget(self, key: K, future: Future[V]) -> None:
        with self._lock:
            if self._items.get(key) is future:
                del self._items[key]
                self._taken.pop(key, None)
