"""Spec validation: names, sizes, unknown keys, and the messages users see."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import VIRTKIT
from virtkit.errors import InvalidInput
from virtkit.specs import GiB, MiB, VMSpec, format_size, parse_size, parse_vm_spec, validate_name


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("512M", "b", 512 * MiB),
        ("1.5G", "b", 3 * GiB // 2),
        ("2GiB", "b", 2 * GiB),
        ("1024", "M", 1024 * MiB),
        (10, "G", 10 * GiB),
        ("4 k", "b", 4096),
        ("7", "b", 7),
    ],
)
def test_parse_size(text: object, unit: str, expected: int) -> None:
    assert parse_size(text, unit) == expected


@pytest.mark.parametrize("bad", ["", "G", "12 parsecs", "1..2G", True, None, [1]])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_size() -> None:
    assert format_size(512 * MiB) == "512 MiB"
    assert format_size(3 * GiB // 2) == "1.5 GiB"
    assert format_size(12) == "12 B"


@pytest.mark.parametrize("good", ["web1", "a", "db-01.prod", "x_y+z", "A" * 64])
def test_good_names(good: str) -> None:
    assert validate_name(good) == good


@pytest.mark.parametrize(
    "bad", ["", "../x", "a/b", "-lead", ".hidden", "sp ace", "tab\t", "nl\n", "A" * 65, "ünï"]
)
def test_bad_names(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name(bad)
    assert info.value.code == "invalid_name" and info.value.expected


def test_defaults() -> None:
    spec = parse_vm_spec({"name": "x"})
    assert spec.vcpus == 1 and spec.memory == 512 * MiB and spec.graphics == "none"
    assert spec.serial and spec.disks == [] and spec.machine is None


def test_memory_bare_number_is_mib_and_disk_bare_number_is_gib() -> None:
    spec = parse_vm_spec({"name": "x", "memory": 256, "disks": [{"size": 2}]})
    assert spec.memory == 256 * MiB and spec.disks[0].size == 2 * GiB


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "bogus": 1}, "bogus: unknown key"),
        ({"name": "x", "disks": [{"size": "1G", "bus": "floppy"}]}, "disks[0].bus"),
        ({"name": "x", "disks": [{}]}, "exactly one of"),
        ({"name": "x", "memory": "0"}, "memory: memory must be at least 16 MiB"),
        ({"name": "x", "vcpus": 0}, "vCPUs must be at least 1"),
        ({"name": "x", "initrd": "/i"}, "need 'kernel'"),
        ({"name": "x", "boot": ["cdrom"]}, "needs a 'cdrom'"),
        ({"name": "x", "tags": ["bad tag"]}, "invalid tag"),
        ({"vcpus": 1}, "name: required"),
        ({"name": "x", "graphics": "sdl"}, "graphics"),
        (["name", "x"], "expected a mapping"),
    ],
)
def test_invalid_specs(data: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_vm_spec(data, "spec file s.yaml")
    assert message in info.value.message
    assert info.value.message.startswith("invalid spec file s.yaml: ")
    assert "\n" not in info.value.message


def test_schema_is_exported_by_the_cli() -> None:
    out = subprocess.run(
        [VIRTKIT, "vm", "spec-schema"], capture_output=True, text=True, check=True
    ).stdout
    schema = json.loads(out)
    assert schema == json.loads(json.dumps(VMSpec.model_json_schema()))
    assert schema["additionalProperties"] is False
    assert {
        "name",
        "vcpus",
        "memory",
        "disks",
        "kernel",
        "cdrom",
        "graphics",
        "machine",
        "cpu",
        "tags",
        "description",
    } <= set(schema["properties"])
