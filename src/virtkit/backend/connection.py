"""The libvirt connection: opened lazily, kept alive, reopened after a drop, with events.

One :class:`Connection` per libvirt URI. The first call opens it (under a lock); keepalive makes a
dead daemon noticeable; the close callback marks the connection dead; the next call opens a new one.
Nothing here ever exits or kills the process. Domain events (lifecycle, metadata, jobs, block
jobs, migration iterations, I/O errors; see :mod:`virtkit.backend.events`) arrive on libvirt's
event loop thread (one per process) and are passed to every subscriber; they are registered anew
on every (re)open, so subscribers keep hearing after a reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import libvirt

from virtkit.backend import events
from virtkit.backend.errors import translate_open_error
from virtkit.backend.events import DomainEvent as DomainEvent  # re-exported (its old home)

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


Subscriber = Callable[[DomainEvent], None]
# A host's connection changed: ("lost", why) from the close callback, ("reconnected", "") on a
# reopen after a loss.
StateListener = Callable[[str, str], None]

_CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "closed by client"}


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
        self._lost = False  # a loss was reported to the state listeners; a reopen reports back
        self._lost_lock = threading.Lock()  # the close callback runs on the event-loop thread
        self._subscribers: list[Subscriber] = []
        self._state_listeners: list[StateListener] = []
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
                self._report_lost("connection dropped")
                self._drop()
            self._conn = self._open()
            self._dead = False
            self.generation += 1
            with self._lost_lock:
                was_lost, self._lost = self._lost, False
            if was_lost:
                self._report("reconnected", "")
            return self._conn

    def check(self) -> None:
        """Reopen the connection if it was lost (a watchdog's call: events resume only once
        something reopens it); raises ``ConnectionFailed`` while the host cannot be reached."""
        self.get()

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
        for name, callback in self._event_callbacks():
            event_id = getattr(libvirt, f"VIR_DOMAIN_EVENT_ID_{name}", None)
            if event_id is None:  # older bindings
                continue
            try:
                self._callback_ids.append(
                    conn.domainEventRegisterAny(None, event_id, callback, None)
                )
            except libvirt.libvirtError as exc:  # a driver without this event (test://)
                log.debug("no %s events from %s: %s", name.lower(), self.uri, exc)
        log.debug("opened libvirt connection to %s", self.uri)
        return conn

    def _event_callbacks(self) -> list[tuple[str, Callable[..., None]]]:
        return [
            ("LIFECYCLE", self._on_lifecycle),
            ("METADATA_CHANGE", self._on_metadata),
            ("REBOOT", self._on_reboot),
            ("JOB_COMPLETED", self._on_job_completed),
            ("BLOCK_JOB_2", self._on_block_job),
            ("MIGRATION_ITERATION", self._on_migration_iteration),
            ("IO_ERROR_REASON", self._on_io_error),
        ]

    # -- callbacks, on libvirt's event-loop thread ----------------------------------------------

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt closed the connection to %s (reason %s)", self.uri, reason)
        self._dead = True
        self._report_lost(_CLOSE_REASONS.get(reason, f"reason {reason}"))

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        self._make(events.from_lifecycle, dom, event, detail)

    def _on_metadata(self, _conn: Any, dom: Any, mtype: int, nsuri: Any, _opaque: Any) -> None:
        """Metadata changed (by any client, virsh too): ``event`` is ``metadata-changed``."""
        self._make(events.from_metadata, dom, mtype, nsuri)

    def _on_reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        self._make(events.from_reboot, dom)

    def _on_job_completed(self, _conn: Any, dom: Any, params: Any, _opaque: Any) -> None:
        self._make(events.from_job_completed, dom, params)

    def _on_block_job(
        self, _conn: Any, dom: Any, disk: str, jtype: int, status: int, _opaque: Any
    ) -> None:
        self._make(events.from_block_job, dom, disk, jtype, status)

    def _on_migration_iteration(self, _conn: Any, dom: Any, iteration: int, _opaque: Any) -> None:
        self._make(events.from_migration_iteration, dom, iteration)

    def _on_io_error(
        self,
        _conn: Any,
        dom: Any,
        path: str,
        alias: str,
        action: int,
        reason: str,
        _opaque: Any,
    ) -> None:
        self._make(events.from_io_error, dom, path, alias, action, reason)

    def _make(self, build: Callable[..., DomainEvent], dom: Any, *args: Any) -> None:
        try:
            ev = build(dom, *args, host=self.uri)
        except libvirt.libvirtError:  # the domain went away meanwhile
            return
        except Exception:  # a malformed callback must not kill the event loop's iteration
            log.exception("unreadable event from %s", self.uri)
            return
        self._deliver(ev)

    def _deliver(self, ev: DomainEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(ev)
            except Exception:
                log.exception("event subscriber %r failed", subscriber)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for every domain event; returns a function that unsubscribes.

        Events of every kind arrive (``DomainEvent.kind``): lifecycle, metadata, job,
        block-job, migration, io-error; a subscriber picks what it needs."""
        self.get()  # events flow only while a connection is open
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def watch_state(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener("lost", why)`` when the connection drops and
        ``listener("reconnected", "")`` when a later call reopened it (events resume then;
        those in between are missed). Opens nothing; returns a function that stops it."""
        self._state_listeners.append(listener)

        def unwatch() -> None:
            if listener in self._state_listeners:
                self._state_listeners.remove(listener)

        return unwatch

    def _report_lost(self, why: str) -> None:
        with self._lost_lock:
            first, self._lost = not self._lost, True
        if first:
            self._report("lost", why)

    def _report(self, state: str, why: str) -> None:
        for listener in list(self._state_listeners):
            try:
                listener(state, why)
            except Exception:
                log.exception("connection state listener %r failed", listener)

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
