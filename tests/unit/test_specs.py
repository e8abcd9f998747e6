"""Spec validation: names, sizes, unknown keys, and the messages users see."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests.conftest import VIRTKIT
from virtkit.errors import InvalidInput
from virtkit.specs import (
    DiskAttachSpec,
    GiB,
    MiB,
    NetworkSpec,
    PoolSpec,
    VMSetSpec,
    VMSpec,
    VolumeResizeSpec,
    format_size,
    parse_model,
    parse_size,
    parse_vm_spec,
    validate_name,
)


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


# -- the spec types of single operations: vm set, disk attach, volume resize --------------------


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"vcpus": None, "memory": None}, "nothing_to_set", ["nothing to change"]),
        ({"vcpus": 0, "memory": None}, "invalid_vcpus", ["vcpus:", "vCPUs must be at least 1"]),
        ({"vcpus": "many", "memory": None}, "invalid_spec", ["vcpus:", "integer"]),
        ({"vcpus": None, "memory": 1024}, "invalid_memory", ["memory:", "at least 16 MiB"]),
        ({"vcpus": None, "memory": "8M"}, "invalid_memory", ["memory:", "got 8 MiB"]),
        ({"vcpus": None, "memory": "12 parsecs"}, "invalid_memory", ["memory:", "unit"]),
        ({"vcpus": 2, "memory": "lots"}, "invalid_memory", ["memory:", "not a size"]),
    ],
)
def test_vm_set_spec_refuses(kwargs: dict[str, object], code: str, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        VMSetSpec.check(**kwargs)  # type: ignore[arg-type]
    assert info.value.code == code and info.value.expected
    assert info.value.message.startswith("invalid VM change: ")
    assert all(w in info.value.message for w in words), info.value.message


def test_vm_set_spec_sizes_ints_are_bytes_text_is_mib_by_default() -> None:
    assert VMSetSpec.check(vcpus=None, memory=256 * MiB).memory == 256 * MiB
    assert VMSetSpec.check(vcpus=None, memory="256").memory == 256 * MiB
    assert VMSetSpec.check(vcpus=None, memory="1G").memory == GiB
    assert VMSetSpec.check(vcpus=3, memory=None) == VMSetSpec(vcpus=3)
    # in a spec (a file, an API body) a bare number is MiB, as in a VM spec
    assert parse_model(VMSetSpec, {"memory": 256}, "VM change").memory == 256 * MiB


def test_vm_set_and_create_share_the_rules() -> None:
    for data in ({"memory": "8M"}, {"vcpus": 0}):
        with pytest.raises(InvalidInput) as created:
            parse_vm_spec({"name": "x", **data})
        with pytest.raises(InvalidInput) as changed:
            parse_model(VMSetSpec, data, "VM spec")
        assert created.value.message == changed.value.message


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({}, "invalid_spec", ["exactly one of an image path or a size"]),
        ({"path": "/x.qcow2", "size": "1G"}, "invalid_spec", ["exactly one"]),
        ({"size": 1024}, "invalid_size", ["size:", "at least 1 MiB"]),
        ({"size": "10 parsecs"}, "invalid_size", ["size:", "unit"]),
        ({"size": "1G", "bus": "ide"}, "invalid_bus", ["bus:", "virtio and scsi, not 'ide'"]),
    ],
)
def test_disk_attach_spec_refuses(kwargs: dict[str, object], code: str, words: list[str]) -> None:
    args: dict[str, object] = {"path": None, "size": None, "bus": "virtio", "readonly": False}
    with pytest.raises(InvalidInput) as info:
        DiskAttachSpec.check(**{**args, **kwargs})  # type: ignore[arg-type]
    assert info.value.code == code
    assert info.value.message.startswith("invalid disk attach: ")
    assert all(w in info.value.message for w in words), info.value.message


def test_disk_attach_spec_sizes() -> None:
    def size(value: int | str) -> int | None:
        return DiskAttachSpec.check(path=None, size=value, bus="scsi", readonly=False).size

    assert size(2 * MiB) == 2 * MiB and size("10") == 10 * GiB and size("512M") == 512 * MiB
    with pytest.raises(InvalidInput, match=r"disks\[0\].size: a new disk must be at least 1 MiB"):
        parse_vm_spec({"name": "x", "disks": [{"size": "1K"}]})


@pytest.mark.parametrize(("size", "words"), [("0", ["more than 0"]), ("-1G", ["got -1 GiB"])])
def test_volume_resize_spec_refuses(size: str, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        VolumeResizeSpec.check(size=size, shrink=False)
    assert info.value.code == "invalid_size"
    assert all(w in info.value.message for w in ["size:", *words]), info.value.message
    assert VolumeResizeSpec.check(size=MiB, shrink=True).size == MiB


def test_one_name_rule_for_every_kind_of_name() -> None:
    cases = [
        (lambda: parse_vm_spec({"name": "a b"}), "name: invalid VM name"),
        (lambda: parse_model(PoolSpec, {"name": "a b", "path": "/p"}, "pool"), "invalid pool name"),
        (lambda: parse_model(NetworkSpec, {"name": "a/b"}, "network"), "invalid network name"),
        (
            lambda: parse_vm_spec({"name": "x", "cloud_init": {"user": "a b"}}),
            "cloud_init.user: invalid user name 'a b'",
        ),
        (
            lambda: parse_vm_spec({"name": "x", "cloud_init": {"hostname": "-h"}}),
            "cloud_init.hostname: invalid host name '-h'",
        ),
    ]
    for make, message in cases:
        with pytest.raises(InvalidInput) as info:
            make()
        assert message in info.value.message and info.value.code == "invalid_spec"


# -- the packages: every name where it was, imported only when used ----------------------------


def _imported(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return set(out.split())


def test_importing_one_name_imports_only_its_module() -> None:
    assert "pydantic" not in _imported("from virtkit.specs import format_size, MiB")
    assert "pydantic" not in _imported("import virtkit.specs, virtkit.cloudinit")
    loaded = _imported("from virtkit.specs import VMSpec")
    assert "virtkit.specs.vm" in loaded and "virtkit.specs.ksm" not in loaded
    assert "virtkit.specs.host" not in loaded and "virtkit.specs.storage" not in loaded
    assert "yaml" not in _imported("from virtkit.cloudinit import key_fingerprint")


@pytest.mark.parametrize("package", ["virtkit.specs", "virtkit.cloudinit"])
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert name in dir(module)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_views_keep_every_field() -> None:
    from virtkit.specs import GuestAddress

    found = GuestAddress(mac="52:54:00:00:00:01", ip="10.0.2.15", prefix=24, source="agent")
    assert found.model_dump() == {"mac": "52:54:00:00:00:01", "ip": "10.0.2.15", "prefix": 24,
                                  "source": "agent", "interface": None}  # fmt: skip
