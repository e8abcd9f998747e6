"""The domain events of several hosts as one stream, filtered (what ``virtkit events`` shows).

One connection per host. Each event is stamped with the time it arrived. A host that drops is
reported (a ``connection`` event ``lost``); a watchdog thread calls :meth:`Connection.check` on
every host every few seconds, which reopens a lost connection as soon as the host answers again
(``reconnected``; libvirt's events are registered anew on the new connection, so they resume,
and those in between are missed). A host unreachable at the start is an error only when no host
is reachable; otherwise it is reported (``unreachable``) and tried again by the same watchdog
(``connected`` once it answers).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from virtkit.backend.events import CONNECTION, DomainEvent, connection_event
from virtkit.backend.host import Host
from virtkit.errors import ConnectionFailed, VirtkitError

log = logging.getLogger(__name__)

WATCH_INTERVAL = 2.0  # seconds between the watchdog's checks of every host


@dataclass(frozen=True)
class FeedEvent:
    """An event and when it arrived (seconds since the epoch)."""

    at: float
    event: DomainEvent


class _Follow:
    """One host followed: its subscription, once it could be made."""

    def __init__(self, host: Host, on_event: Callable[[DomainEvent], None]) -> None:
        self.host = host
        self.uri = host.uri
        self.hostname: str | None = None
        self._on_event = on_event
        self._undo: list[Callable[[], None]] = []

    @property
    def attached(self) -> bool:
        return bool(self._undo)

    def attach(self) -> None:
        """Subscribe (opening the connection); raises ``VirtkitError`` if the host is away."""
        connection = self.host.connection
        unwatch = connection.watch_state(
            lambda state, why: self._on_event(connection_event(self.uri, state, why))
        )
        try:
            unsubscribe = connection.subscribe(self._on_event)
        except BaseException:
            unwatch()
            raise
        self._undo = [unsubscribe, unwatch]
        try:
            self.hostname = self.host.hostname()
        except VirtkitError as exc:
            log.debug("no host name from %s: %s", self.uri, exc)

    def check(self) -> None:
        self.host.connection.check()

    def detach(self) -> None:
        for undo in self._undo:
            undo()
        self._undo = []


class EventFeed:
    """Follow ``hosts``; :meth:`start`, then :meth:`get` until done, then :meth:`close`.

    ``kinds`` and ``vms`` (names or UUIDs) filter domain events when given; ``connection``
    events always pass, since they say the stream may have a gap."""

    def __init__(
        self,
        hosts: Sequence[Host],
        *,
        kinds: Iterable[str] = (),
        vms: Iterable[str] = (),
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self._kinds = frozenset(kinds)
        self._vms = frozenset(vms)
        self._interval = watch_interval
        self._queue: queue.Queue[FeedEvent] = queue.Queue()
        self._follows: list[_Follow] = []
        seen: set[str] = set()
        for host in hosts:
            if host.uri not in seen:  # the same host twice would print each event twice
                seen.add(host.uri)
                self._follows.append(_Follow(host, self._arrived))
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def hostnames(self) -> dict[str, str | None]:
        """Each host's URI -> its host name as libvirt says it (None until reached)."""
        return {f.uri: f.hostname for f in self._follows}

    def wanted(self, event: DomainEvent) -> bool:
        if event.kind == CONNECTION:
            return True
        if self._kinds and event.kind not in self._kinds:
            return False
        return not self._vms or event.domain in self._vms or event.uuid in self._vms

    def _arrived(self, event: DomainEvent) -> None:  # libvirt's event-loop thread
        if self.wanted(event):
            self._queue.put(FeedEvent(time.time(), event))

    def start(self) -> None:
        """Subscribe on every host. If none answers, raise (the one host's own error, or one
        naming every host); else report the unreachable ones and try them again later."""
        failed: list[tuple[_Follow, VirtkitError]] = []
        for follow in self._follows:
            try:
                follow.attach()
            except VirtkitError as exc:
                failed.append((follow, exc))
        if failed and len(failed) == len(self._follows):
            if len(failed) == 1:
                raise failed[0][1]
            reasons = "; ".join(str(error) for _, error in failed)
            raise ConnectionFailed(f"no host could be reached: {reasons}")
        for follow, error in failed:
            self._arrived(connection_event(follow.uri, "unreachable", str(error)))
        self._watchdog = threading.Thread(target=self._watch, name="virtkit-feed", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            for follow in self._follows:
                self._check(follow)

    def _check(self, follow: _Follow) -> None:
        try:
            if follow.attached:
                follow.check()  # reopens a lost connection; the listener reports it
            else:
                follow.attach()
                self._arrived(connection_event(follow.uri, "connected", ""))
        except VirtkitError as exc:
            log.debug("%s is still unreachable: %s", follow.uri, exc)

    def get(self, timeout: float) -> FeedEvent | None:
        """The next event, waiting at most ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(self._interval + 5)
        for follow in self._follows:
            follow.detach()
