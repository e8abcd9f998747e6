"""Which backup sets a retention policy keeps (pure): the newest N, the newest of each of the
last D days and W ISO weeks that have a set, and every set a kept incremental builds on, so
that chains of a full backup and its incrementals are kept or removed as a whole."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from virtkit.specs.backup import Retention


@dataclass(frozen=True)
class SetRef:
    id: str
    parent: str | None
    time: float  # Unix time the set was made


def _newest_per(sets: list[SetRef], key: str, count: int) -> set[str]:
    """The newest set of each of the ``count`` newest periods (day or ISO week) with a set."""
    if count <= 0:
        return set()
    chosen: dict[tuple[int, ...], str] = {}
    for s in sets:  # newest first
        when = datetime.fromtimestamp(s.time, UTC)
        period = (
            (when.year, when.month, when.day) if key == "day" else tuple(when.isocalendar())[:2]
        )
        if period not in chosen:
            if len(chosen) == count:
                break
            chosen[period] = s.id
    return set(chosen.values())


def ancestors(set_id: str, by_id: dict[str, SetRef]) -> list[str]:
    """``set_id`` and the sets it builds on, newest first (a missing parent ends the walk)."""
    chain: list[str] = []
    current: str | None = set_id
    while current is not None and current in by_id and current not in chain:
        chain.append(current)
        current = by_id[current].parent
    return chain


def select(sets: Iterable[SetRef], policy: Retention) -> tuple[list[str], list[str]]:
    """(kept, removed) ids, each newest first."""
    ordered = sorted(sets, key=lambda s: (s.time, s.id), reverse=True)
    by_id = {s.id: s for s in ordered}
    wanted = {s.id for s in ordered[: policy.keep_last]}
    wanted |= _newest_per(ordered, "day", policy.keep_daily)
    wanted |= _newest_per(ordered, "week", policy.keep_weekly)
    kept: set[str] = set()
    for set_id in wanted:
        kept.update(ancestors(set_id, by_id))
    return (
        [s.id for s in ordered if s.id in kept],
        [s.id for s in ordered if s.id not in kept],
    )
