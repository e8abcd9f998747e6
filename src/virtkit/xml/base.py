"""Declarative XML binding: one small class per element, parsed and serialised by one declaration.

An :class:`XMLObject` wraps an ``ElementTree`` element. Its properties are descriptors that read and
write the element in place, so anything the class does not declare (unknown elements,
attributes, other namespaces) is carried through a parse -> change -> serialise round trip
untouched. This is the idea of virt-manager's ``virtinst/xmlbuilder.py``, reduced to what
virtkit needs and fully typed.

Paths are ``/``-separated tag names relative to the object's element (``"os/type"``); ``""`` is the
element itself. Setting a value creates missing elements on the way; setting ``None`` removes it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

T = TypeVar("T")
X = TypeVar("X", bound="XMLObject")

VIRTKIT_NS = "https://virtkit.dev/xmlns/virtkit/1"
# Keep the customary prefixes when XML from libvirt is written back (any prefix is valid XML).
for _prefix, _uri in {
    "vk": VIRTKIT_NS,
    "qemu": "http://libvirt.org/schemas/domain/qemu/1.0",
    "libosinfo": "http://libosinfo.org/xmlns/libvirt/domain/1.0",
    "lxc": "http://libvirt.org/schemas/domain/lxc/1.0",
}.items():
    ET.register_namespace(_prefix, _uri)


class XMLParseError(ValueError):
    """The text is not well-formed XML or has the wrong root element."""


def split_path(path: str) -> list[str]:
    """Split ``a/{ns}b/c`` into tags; slashes inside a ``{namespace}`` do not split."""
    parts: list[str] = []
    current, depth = "", 0
    for char in path:
        if char == "/" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    if current or parts:
        parts.append(current)
    return parts


def parent_and_tag(path: str) -> tuple[str, str]:
    parts = split_path(path)
    return "/".join(parts[:-1]), parts[-1]


def _find(node: ET.Element, path: str) -> ET.Element | None:
    return node if path == "" else node.find(path)


def _ensure(node: ET.Element, path: str) -> ET.Element:
    for tag in split_path(path):
        child = node.find(tag)
        node = child if child is not None else ET.SubElement(node, tag)
    return node


def _remove(node: ET.Element, path: str) -> None:
    parent_path, tag = parent_and_tag(path)
    parent = _find(node, parent_path)
    if parent is None:
        return
    for child in parent.findall(tag):
        parent.remove(child)


class XMLObject:
    """Base of every typed XML element class."""

    TAG: ClassVar[str]

    def __init__(self, node: ET.Element | None = None) -> None:
        self.node = node if node is not None else ET.Element(self.TAG)

    @classmethod
    def parse(cls, text: str | bytes) -> Self:
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise XMLParseError(f"malformed XML: {exc}") from exc
        if root.tag != cls.TAG:
            raise XMLParseError(f"expected <{cls.TAG}>, got <{root.tag}>")
        return cls(root)

    def to_xml(self) -> str:
        copy = ET.fromstring(ET.tostring(self.node))
        ET.indent(copy)
        return ET.tostring(copy, encoding="unicode") + "\n"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XMLObject) and ET.tostring(self.node) == ET.tostring(other.node)

    def __hash__(self) -> int:
        return id(self.node)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {ET.tostring(self.node, encoding='unicode')[:80]}>"


def _to_str(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _yes_no(text: str) -> bool:
    return text in ("yes", "on", "1", "true")


class _Value(Generic[T]):
    """Shared part of Text and Attr: conversion between XML strings and Python values."""

    def __init__(self, path: str, conv: Callable[[str], T]) -> None:
        self.path = path
        self.conv = conv

    def _read(self, obj: XMLObject) -> str | None:
        raise NotImplementedError

    def _write(self, obj: XMLObject, text: str | None) -> None:
        raise NotImplementedError

    @overload
    def __get__(self, obj: None, objtype: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, objtype: type[Any]) -> T | None: ...
    def __get__(self, obj: XMLObject | None, objtype: type[Any]) -> T | Self | None:
        if obj is None:
            return self
        raw = self._read(obj)
        return None if raw is None else self.conv(raw)

    def __set__(self, obj: XMLObject, value: T | None) -> None:
        self._write(obj, None if value is None else _to_str(value))


class Text(_Value[T]):
    """The text of the element at ``path``."""

    def _read(self, obj: XMLObject) -> str | None:
        node = _find(obj.node, self.path)
        return None if node is None or node.text is None else node.text.strip()

    def _write(self, obj: XMLObject, text: str | None) -> None:
        if text is None:
            _remove(obj.node, self.path)
        else:
            _ensure(obj.node, self.path).text = text


class Attr(_Value[T]):
    """The attribute ``name`` of the element at ``path``."""

    def __init__(self, path: str, name: str, conv: Callable[[str], T]) -> None:
        super().__init__(path, conv)
        self.name = name

    def _read(self, obj: XMLObject) -> str | None:
        node = _find(obj.node, self.path)
        return None if node is None else node.get(self.name)

    def _write(self, obj: XMLObject, text: str | None) -> None:
        if text is None:
            node = _find(obj.node, self.path)
            if node is not None and self.name in node.attrib:
                del node.attrib[self.name]
        else:
            _ensure(obj.node, self.path).set(self.name, text)


def text(path: str) -> Text[str]:
    return Text(path, str)


def int_text(path: str) -> Text[int]:
    return Text(path, int)


def attr(path: str, name: str) -> Attr[str]:
    return Attr(path, name, str)


def int_attr(path: str, name: str) -> Attr[int]:
    return Attr(path, name, lambda s: int(s, 0))


def bool_attr(path: str, name: str) -> Attr[bool]:
    return Attr(path, name, _yes_no)


class Flag:
    """Whether an (empty) element at ``path`` is present, e.g. ``<readonly/>``."""

    def __init__(self, path: str) -> None:
        self.path = path

    @overload
    def __get__(self, obj: None, objtype: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, objtype: type[Any]) -> bool: ...
    def __get__(self, obj: XMLObject | None, objtype: type[Any]) -> bool | Self:
        if obj is None:
            return self
        return _find(obj.node, self.path) is not None

    def __set__(self, obj: XMLObject, value: bool) -> None:
        if value:
            _ensure(obj.node, self.path)
        else:
            _remove(obj.node, self.path)


class Child(Generic[X]):
    """A single child object of class ``cls`` at ``path`` (its last segment is the child's tag)."""

    def __init__(self, cls: type[X], path: str | None = None) -> None:
        self.cls = cls
        self.path = path if path is not None else cls.TAG

    @overload
    def __get__(self, obj: None, objtype: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, objtype: type[Any]) -> X | None: ...
    def __get__(self, obj: XMLObject | None, objtype: type[Any]) -> X | Self | None:
        if obj is None:
            return self
        node = _find(obj.node, self.path)
        return None if node is None else self.cls(node)

    def __set__(self, obj: XMLObject, value: X | None) -> None:
        _remove(obj.node, self.path)
        if value is not None:
            parent_path = parent_and_tag(self.path)[0]
            _ensure(obj.node, parent_path).append(value.node)


class ChildList(Generic[X]):
    """A live list view of the children of one class below one parent element."""

    def __init__(self, owner: XMLObject, cls: type[X], parent_path: str, tag: str) -> None:
        self._owner = owner
        self._cls = cls
        self._parent_path = parent_path
        self._tag = tag

    def _nodes(self) -> list[ET.Element]:
        parent = _find(self._owner.node, self._parent_path)
        return [] if parent is None else parent.findall(self._tag)

    def __iter__(self) -> Iterator[X]:
        return iter([self._cls(n) for n in self._nodes()])

    def __len__(self) -> int:
        return len(self._nodes())

    def __getitem__(self, index: int) -> X:
        return self._cls(self._nodes()[index])

    def append(self, child: X) -> X:
        parent = _ensure(self._owner.node, self._parent_path)
        # Keep children of one kind together: libvirt does not care, humans reading XML do.
        siblings = parent.findall(self._tag)
        if siblings:
            position = list(parent).index(siblings[-1]) + 1
            parent.insert(position, child.node)
        else:
            parent.append(child.node)
        return child

    def remove(self, child: X) -> None:
        parent = _find(self._owner.node, self._parent_path)
        if parent is None or child.node not in list(parent):
            raise ValueError(f"{child!r} is not in this list")
        parent.remove(child.node)


class Children(Generic[X]):
    """All children of class ``cls`` at ``path`` (e.g. ``"devices/disk"``)."""

    def __init__(self, cls: type[X], path: str | None = None) -> None:
        self.cls = cls
        self.path = path if path is not None else cls.TAG

    @overload
    def __get__(self, obj: None, objtype: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: XMLObject, objtype: type[Any]) -> ChildList[X]: ...
    def __get__(self, obj: XMLObject | None, objtype: type[Any]) -> ChildList[X] | Self:
        if obj is None:
            return self
        parent_path, tag = parent_and_tag(self.path)
        return ChildList(obj, self.cls, parent_path, tag)
