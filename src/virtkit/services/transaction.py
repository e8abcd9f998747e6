"""Work that makes several things, undone as a whole when a step fails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Transaction:
    """Register an undo after each step; if the block raises, the undos run in reverse order.

    An undo that fails is logged and the others still run; the original error is re-raised.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._undos: list[tuple[str, Callable[[], object]]] = []

    def on_rollback(self, description: str, undo: Callable[[], object]) -> None:
        self._undos.append((description, undo))

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        log.info("%s failed (%s); undoing %d step(s)", self.what, exc, len(self._undos))
        for description, undo in reversed(self._undos):
            try:
                undo()
                log.info("undid: %s", description)
            except Exception as undo_exc:
                log.error("could not undo %s: %s", description, undo_exc)
