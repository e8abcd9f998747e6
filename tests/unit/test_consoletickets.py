"""One-shot console tickets: one use, one VM, one kind, a short life."""

from __future__ import annotations

import pytest

from virtkit.errors import PermissionDenied
from virtkit.services.consoletickets import TicketBook


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_ticket_is_good_once() -> None:
    book = TicketBook()
    ticket = book.issue("otto", "web1", "serial")
    assert len(ticket.secret) >= 32
    assert book.redeem(ticket.secret, "web1", "serial").user == "otto"
    with pytest.raises(PermissionDenied) as again:
        book.redeem(ticket.secret, "web1", "serial")
    assert again.value.code == "invalid_ticket"


@pytest.mark.parametrize(("vm", "kind"), [("web2", "serial"), ("web1", "vnc")])
def test_a_ticket_opens_only_its_vm_and_kind(vm: str, kind: str) -> None:
    book = TicketBook()
    ticket = book.issue("otto", "web1", "serial")
    with pytest.raises(PermissionDenied, match="no valid console ticket"):
        book.redeem(ticket.secret, vm, kind)
    with pytest.raises(PermissionDenied):  # spent by the wrong try
        book.redeem(ticket.secret, "web1", "serial")


def test_a_ticket_expires() -> None:
    clock = Clock()
    book = TicketBook(lifetime=30, clock=clock)
    ticket = book.issue("otto", "web1", "vnc")
    assert ticket.expires == 1030.0
    clock.now += 31
    with pytest.raises(PermissionDenied):
        book.redeem(ticket.secret, "web1", "vnc")
    assert len(book) == 0


@pytest.mark.parametrize("secret", [None, "", "nope"])
def test_no_or_unknown_ticket(secret: str | None) -> None:
    with pytest.raises(PermissionDenied):
        TicketBook().redeem(secret, "web1", "vnc")
