"""One-shot console tickets: the credential a browser's console websocket presents.

A browser cannot put an ``Authorization`` header on a websocket, and a cookie would ride along
with any page's websocket to this host. So an authenticated caller with the ``console``
permission asks for a ticket (``POST .../console/ticket``), and the websocket carries it in its
query string. A ticket is good for one VM, one kind of console, one use and a short time.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from virtkit.errors import PermissionDenied

ConsoleKind = Literal["vnc", "serial"]
TICKET_LIFETIME = 30.0


@dataclass(frozen=True)
class Ticket:
    secret: str
    user: str
    vm: str
    kind: str
    expires: float  # seconds since the epoch


class TicketBook:
    """Tickets in memory (a restart of the service voids them all); thread-safe."""

    def __init__(
        self, lifetime: float = TICKET_LIFETIME, clock: Callable[[], float] = time.time
    ) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()

    def issue(self, user: str, vm: str, kind: str) -> Ticket:
        now = self._clock()
        ticket = Ticket(secrets.token_urlsafe(24), user, vm, kind, now + self.lifetime)
        with self._lock:
            self._purge(now)
            self._tickets[ticket.secret] = ticket
        return ticket

    def redeem(self, secret: str | None, vm: str, kind: str) -> Ticket:
        """The ticket, consumed; ``invalid_ticket`` when it is unknown, used, expired, or for
        another VM or kind (a ticket presented for the wrong VM is spent all the same)."""
        now = self._clock()
        with self._lock:
            self._purge(now)
            ticket = self._tickets.pop(secret, None) if secret else None
        if ticket is None or ticket.expires <= now or ticket.vm != vm or ticket.kind != kind:
            raise PermissionDenied(
                "no valid console ticket: get one (POST .../console/ticket) right before "
                "connecting; each is good for one connection within "
                f"{self.lifetime:g} s",
                code="invalid_ticket",
            )
        return ticket

    def __len__(self) -> int:
        with self._lock:
            return len(self._tickets)

    def _purge(self, now: float) -> None:
        for secret in [s for s, t in self._tickets.items() if t.expires <= now]:
            del self._tickets[secret]
