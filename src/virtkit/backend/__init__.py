"""THE libvirt seam: the only package that imports ``libvirt``."""

from virtkit.backend.connection import Connection, DomainEvent
from virtkit.backend.host import Host

__all__ = ["Connection", "DomainEvent", "Host"]
