"""The libvirt connection: opened lazily, kept alive, reopened after a drop, with events.

One :class:`Connection` per libvirt URI. The first call opens it (under a lock); keepalive makes a
dead daemon noticeable; the close callback marks the connection dead; the next call opens a new one.
Nothing here ever exits or kills the process. Lifecycle events arrive on libvirt's event loop
thread (one per process) and are passed to every subscriber.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from virtkit.backend.errors import translate_open_error

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_started = False


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; virtkit reports them itself."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it on one daemon thread."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # keep the loop alive whatever one callback does
                    log.exception("libvirt event loop iteration failed")

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


_EVENT_NAMES = {
    0: "defined",
    1: "undefined",
    2: "started",
    3: "suspended",
    4: "resumed",
    5: "stopped",
    6: "shutdown",
    7: "pmsuspended",
    8: "crashed",
}


@dataclass(frozen=True)
class DomainEvent:
    """A domain event: ``event`` is a lifecycle event (``defined``, ``started``, ``stopped``,
    ``suspended``, ...) or ``metadata-changed``."""

    domain: str
    uuid: str
    event: str
    detail: int


Subscriber = Callable[[DomainEvent], None]


def is_local_uri(uri: str) -> bool:
    parsed = urllib.parse.urlsplit(uri)
    return parsed.hostname in (None, "", "localhost") and "+ssh" not in parsed.scheme


class Connection:
    """A lazily opened, self-healing connection to one libvirt URI."""

    def __init__(self, uri: str, *, keepalive_interval: int = 5, keepalive_count: int = 3) -> None:
        self.uri = uri
        self._keepalive = (keepalive_interval, keepalive_count)
        self._lock = threading.RLock()
        self._conn: libvirt.virConnect | None = None
        self._dead = False
        self._subscribers: list[Subscriber] = []
        self._callback_ids: list[int] = []
        self.generation = 0  # bumped on every (re)open; caches keyed on it go stale with it

    @property
    def is_local(self) -> bool:
        return is_local_uri(self.uri)

    def get(self) -> libvirt.virConnect:
        """The open libvirt connection, opening or reopening it as needed."""
        with self._lock:
            if self._conn is not None and not self._dead and self._alive(self._conn):
                return self._conn
            if self._conn is not None:
                log.warning("connection to %s was lost; reconnecting", self.uri)
                self._drop()
            self._conn = self._open()
            self._dead = False
            self.generation += 1
            return self._conn

    def _alive(self, conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _open(self) -> libvirt.virConnect:
        ensure_event_loop()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise translate_open_error(exc, self.uri) from exc
        if conn is None:  # old bindings returned None instead of raising
            raise translate_open_error(libvirt.libvirtError("open failed"), self.uri)
        # Local drivers (test://) have neither keepalive nor close callbacks.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*self._keepalive)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)
        self._callback_ids = []
        try:
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                )
            )
        except libvirt.libvirtError as exc:
            log.debug("no lifecycle events from %s: %s", self.uri, exc)
        try:
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, self._on_metadata, None
                )
            )
        except libvirt.libvirtError as exc:
            log.debug("no metadata events from %s: %s", self.uri, exc)
        log.debug("opened libvirt connection to %s", self.uri)
        return conn

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt closed the connection to %s (reason %s)", self.uri, reason)
        self._dead = True

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        try:
            ev = DomainEvent(
                dom.name(), dom.UUIDString(), _EVENT_NAMES.get(event, str(event)), detail
            )
        except libvirt.libvirtError:
            return
        self._deliver(ev)

    def _on_metadata(self, _conn: Any, dom: Any, mtype: int, _nsuri: Any, _opaque: Any) -> None:
        """Metadata changed (by any client, virsh too): ``event`` is ``metadata-changed``."""
        try:
            ev = DomainEvent(dom.name(), dom.UUIDString(), "metadata-changed", int(mtype))
        except libvirt.libvirtError:
            return
        self._deliver(ev)

    def _deliver(self, ev: DomainEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(ev)
            except Exception:
                log.exception("event subscriber %r failed", subscriber)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for every lifecycle event; returns a function that unsubscribes."""
        self.get()  # events flow only while a connection is open
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        for callback_id in self._callback_ids:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(callback_id)
        self._callback_ids = []
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def mark_dead(self) -> None:
        """Force a reconnect on the next call (used after a call failed with ConnectionLost)."""
        self._dead = True

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
