"""One stream of what happens: libvirt's domain events (lifecycle, jobs, ...) and task
changes, fanned out to any number of subscribers (the API's server-sent events, the web UI
through them).

libvirt's events arrive on its event-loop thread and tasks change on worker threads; a
subscriber gets :class:`HubEvent` objects from its own bounded queue, so a slow reader loses the
oldest events (and is told so) instead of holding everyone up.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtkit.backend.events import DomainEvent
from virtkit.specs.tasks import TaskView

QUEUE_MAX = 1000


@dataclass(frozen=True)
class HubEvent:
    """``kind`` is ``vm`` (a domain event: lifecycle, job, ...) or ``task``; ``data`` is its
    JSON object."""

    id: int
    kind: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)


class Subscription:
    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self.queue: queue.Queue[HubEvent] = queue.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0

    def put(self, event: HubEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            try:
                self.queue.get_nowait()
                self.queue.put_nowait(event)
            except (queue.Empty, queue.Full):
                pass

    def get(self, timeout: float) -> HubEvent | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._hub._remove(self)


class EventHub:
    """Fans out events to subscriptions; ``attach_*`` wire libvirt and the task runner in."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._detach: list[Callable[[], None]] = []

    def attach_vms(
        self, subscribe: Callable[[Callable[[DomainEvent], None]], Callable[[], None]]
    ) -> None:
        """Carry libvirt's domain events, every kind (``Connection.subscribe``)."""
        self._detach.append(subscribe(self.vm_event))

    def attach_tasks(
        self, subscribe: Callable[[Callable[[TaskView], None]], Callable[[], None]]
    ) -> None:
        """Carry task changes (``TaskRunner.subscribe``)."""
        self._detach.append(subscribe(self.task_event))

    def detach(self) -> None:
        for undo in self._detach:
            undo()
        self._detach = []

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> HubEvent:
        event = HubEvent(next(self._ids), kind, data)
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.put(event)
        return event

    def vm_event(self, event: DomainEvent) -> None:
        """Every domain event, of every kind, as ``vm``: ``detail`` stays libvirt's number (as
        it always was); ``kind``, ``detail_name``, ``host`` and ``data`` were added."""
        self.publish(
            "vm",
            {
                "vm": event.domain,
                "uuid": event.uuid,
                "event": event.event,
                "detail": event.detail,
                "kind": event.kind,
                "detail_name": event.detail_name,
                "host": event.host,
                "data": event.data,
            },
        )

    def task_event(self, task: TaskView) -> None:
        self.publish("task", task.model_dump(mode="json"))
