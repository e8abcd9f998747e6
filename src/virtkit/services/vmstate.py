"""Finding a VM by name, its states as users read them, and the error for an action its state
forbids (shared by the VM use cases)."""

from __future__ import annotations

from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import InvalidState
from virtkit.specs import VMState, validate_name


def lookup(host: Host, name: str) -> Guest:
    """The VM ``name`` (``InvalidInput`` for a bad name, ``NotFound`` for a missing VM)."""
    validate_name(name)
    return host.lookup(name)


def require(host: Host, name: str, allowed: tuple[VMState, ...], action: str) -> Guest:
    """The VM ``name``, if its state allows ``action``."""
    guest = lookup(host, name)
    state = guest.state()[0]
    if state not in allowed:
        raise state_error(name, action, state)
    return guest


def state_code(state: VMState) -> str:
    return "vm_" + state.value.replace("-", "_")


def state_error(name: str, action: str, state: VMState) -> InvalidState:
    return InvalidState(
        f"cannot {action} VM {name!r}: it is {describe(state)}", code=state_code(state)
    )


def describe(state: VMState) -> str:
    return {
        VMState.SHUTOFF: "shut off",
        VMState.RUNNING: "running",
        VMState.PAUSED: "paused",
        VMState.SHUTTING_DOWN: "shutting down",
        VMState.CRASHED: "crashed",
        VMState.PMSUSPENDED: "suspended by the guest",
        VMState.NOSTATE: "in no known state",
    }[state]
