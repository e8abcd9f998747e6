"""What every route gets: the client, the settings, the task runner and the event hub, made once
per service process (``app.state.ctx``)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from virtkit.errors import VirtkitError
from virtkit.services.consoletickets import TicketBook
from virtkit.services.eventhub import EventHub
from virtkit.services.tasks import TaskRunner
from virtkit.settings import Settings

if TYPE_CHECKING:
    from virtkit.client import Client

log = logging.getLogger("virtkit.api")

_ATTACH_RETRY = 5.0


@dataclass
class ApiContext:
    client: Client
    settings: Settings
    tasks: TaskRunner
    events: EventHub
    tickets: TicketBook = field(default_factory=TicketBook)
    metrics: Any = None  # /metrics' collector, made on the first scrape (routes/metrics.py)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Recover the tasks a dead process left, and wire libvirt's events in (retried in the
        background while libvirt is down, so that the service starts anyway)."""
        from virtkit.services import taskcleanup

        taskcleanup.register(self.tasks, self.client.vms, self.client.pools)
        self.tasks.recover()
        self.events.attach_tasks(self.tasks.subscribe)
        threading.Thread(target=self._attach_vm_events, name="virtkit-events", daemon=True).start()

    def _attach_vm_events(self) -> None:
        while not self._stop.is_set():
            try:
                self.events.attach_vms(self.client.connection.subscribe)
                return
            except VirtkitError as exc:
                log.warning("no libvirt events yet (%s); retrying in %g s", exc, _ATTACH_RETRY)
                self._stop.wait(_ATTACH_RETRY)

    def stop(self) -> None:
        self._stop.set()
        self.events.detach()
        self.tasks.shutdown(wait=False)
        self.client.close()


async def context(request: Request) -> ApiContext:
    # Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in
    # a worker thread, and each such hop costs a request latency under load (docs/api.md).
    ctx: ApiContext = request.app.state.ctx
    return ctx
