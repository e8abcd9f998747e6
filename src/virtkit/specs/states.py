"""A VM's states (no pydantic: the libvirt seam and a fast CLI start import this)."""

from __future__ import annotations

from enum import StrEnum


class VMState(StrEnum):
    """A VM's state as virtkit reports it (libvirt's states, with user-facing names)."""

    NOSTATE = "nostate"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"

    @property
    def is_active(self) -> bool:
        return self not in (VMState.SHUTOFF, VMState.CRASHED, VMState.NOSTATE)
