"""Typed classes for libvirt storage pool and volume XML."""

from __future__ import annotations

from virtkit.xml.base import XMLObject, attr, int_text, text


class Pool(XMLObject):
    TAG = "pool"
    type = attr("", "type")
    name = text("name")
    uuid = text("uuid")
    target_path = text("target/path")


class Volume(XMLObject):
    TAG = "volume"
    type = attr("", "type")
    name = text("name")
    key = text("key")
    capacity = int_text("capacity")
    capacity_unit = attr("capacity", "unit")
    allocation = int_text("allocation")
    target_path = text("target/path")
    format = attr("target/format", "type")
    backing_path = text("backingStore/path")
    backing_format = attr("backingStore/format", "type")
