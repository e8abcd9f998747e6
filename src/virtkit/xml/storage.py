"""Typed classes for libvirt storage pool and volume XML
(https://libvirt.org/formatstorage.html)."""

from __future__ import annotations

from virtkit.xml.base import Children, XMLObject, attr, int_attr, int_text, text


class SourceHost(XMLObject):
    TAG = "host"
    name = attr("", "name")
    port = int_attr("", "port")


class SourceDevice(XMLObject):
    TAG = "device"
    path = attr("", "path")


class Pool(XMLObject):
    TAG = "pool"
    type = attr("", "type")
    name = text("name")
    uuid = text("uuid")
    capacity = int_text("capacity")
    allocation = int_text("allocation")
    available = int_text("available")
    target_path = text("target/path")
    source_hosts = Children(SourceHost, "source/host")
    source_devices = Children(SourceDevice, "source/device")
    source_dir = attr("source/dir", "path")
    source_name = text("source/name")
    source_format = attr("source/format", "type")
    auth_type = attr("source/auth", "type")
    auth_username = attr("source/auth", "username")
    auth_secret_uuid = attr("source/auth/secret", "uuid")
    auth_secret_usage = attr("source/auth/secret", "usage")


class Volume(XMLObject):
    TAG = "volume"
    type = attr("", "type")
    name = text("name")
    key = text("key")
    capacity = int_text("capacity")
    capacity_unit = attr("capacity", "unit")
    allocation = int_text("allocation")
    allocation_unit = attr("allocation", "unit")
    physical = int_text("physical")
    target_path = text("target/path")
    format = attr("target/format", "type")
    compat = text("target/compat")
    backing_path = text("backingStore/path")
    backing_format = attr("backingStore/format", "type")
