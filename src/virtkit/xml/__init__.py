"""libvirt XML <-> typed objects. Pure: no I/O, no libvirt."""

from virtkit.xml.base import VIRTKIT_NS, XMLObject, XMLParseError

__all__ = ["VIRTKIT_NS", "XMLObject", "XMLParseError"]
