"""THE libvirt seam: the only package that imports ``libvirt``."""

from virtkit.backend.connection import Connection
from virtkit.backend.events import DomainEvent
from virtkit.backend.host import Host, LibvirtHost

__all__ = ["Connection", "DomainEvent", "Host", "LibvirtHost"]
