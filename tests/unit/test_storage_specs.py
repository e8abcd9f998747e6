"""Pool specs and XML, volume names, image-import helpers: pure logic."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import libvirt
import pytest

from virtkit.errors import InvalidInput
from virtkit.services.images import _claimed_format, _strip_name, detect_compression, parse_checksum
from virtkit.services.pools import build_pool
from virtkit.specs import PoolSpec, parse_model, validate_volume_name
from virtkit.xml.storage import Pool

SPECS = {
    "dir": {"path": "/srv/vms"},
    "netfs": {"path": "/mnt/nfs", "source_host": "nas", "source_path": "/export/vms"},
    "logical": {"source_name": "vg0", "source_devices": ["/dev/sdb"]},
    "iscsi": {"source_host": "san", "source_path": "iqn.2026-01.com.example:vms"},
    "rbd": {
        "source_host": "mon1",
        "source_name": "rbd",
        "auth_username": "libvirt",
        "auth_secret_uuid": "8fcd8a41-0a50-4f42-9e2d-7a1a5e7d8f35",
    },
}


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_pool_xml_per_type(kind: str) -> None:
    spec = parse_model(PoolSpec, {"name": f"p-{kind}", "type": kind, **SPECS[kind]}, "pool")
    pool = Pool.parse(build_pool(spec).to_xml())
    assert pool.type == kind and pool.name == f"p-{kind}"
    if kind == "dir":
        assert pool.target_path == "/srv/vms"
    if kind == "netfs":
        assert pool.source_dir == "/export/vms" and pool.source_format == "nfs"
        assert [h.name for h in pool.source_hosts] == ["nas"]
    if kind == "logical":
        assert pool.source_name == "vg0" and pool.target_path == "/dev/vg0"
        assert [d.path for d in pool.source_devices] == ["/dev/sdb"]
    if kind == "iscsi":
        assert [d.path for d in pool.source_devices] == ["iqn.2026-01.com.example:vms"]
        assert pool.target_path == "/dev/disk/by-path"
    if kind == "rbd":
        assert pool.auth_type == "ceph" and pool.auth_username == "libvirt"
        assert pool.auth_secret_uuid == SPECS["rbd"]["auth_secret_uuid"]


def test_dir_pool_xml_is_accepted_by_libvirt(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    conn = libvirt.open(f"test://{node}")
    try:
        spec = parse_model(PoolSpec, {"name": "p", "path": str(tmp_path)}, "pool")
        pool = conn.storagePoolDefineXML(build_pool(spec).to_xml(), 0)
        assert Pool.parse(pool.XMLDesc(0)).target_path == str(tmp_path)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "p", "path": "rel"}, "not absolute"),
        ({"name": "p"}, "dir pool needs path"),
        ({"name": "p", "type": "netfs", "path": "/m"}, "source_host, source_path"),
        ({"name": "p", "type": "zfs", "path": "/m"}, "type"),
        ({"name": "../p", "path": "/m"}, "invalid pool name"),
        ({"name": "p", "path": "/m", "colour": "red"}, "colour: unknown key"),
    ],
)
def test_pool_spec_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match="invalid pool spec") as info:
        parse_model(PoolSpec, data, "pool spec")
    assert message in info.value.message


@pytest.mark.parametrize("bad", ["", "a/b", "..", "../x", ".hidden", "x\ny", "a" * 256])
def test_bad_volume_names(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate_volume_name(bad)


def test_good_volume_names() -> None:
    for good in ("disk.qcow2", "web1-disk0.qcow2", "a b.raw", "x" * 255):
        assert validate_volume_name(good) == good


def test_checksums() -> None:
    assert parse_checksum("sha256:" + "AB" * 32) == ("sha256", "ab" * 32)
    assert parse_checksum("cd" * 64) == ("sha512", "cd" * 64)
    for bad in ("md5:abc", "sha256:xyz", "sha256:" + "a" * 10, "abc"):
        with pytest.raises(InvalidInput, match="invalid checksum"):
            parse_checksum(bad)


def test_compression_is_found_by_content_not_name(tmp_path: Path) -> None:
    files = {
        "a.img": gzip.compress(b"x"),
        "b.qcow2": lzma.compress(b"x"),
        "c.gz": b"plain bytes",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert detect_compression(str(tmp_path / "a.img")) == "gz"
    assert detect_compression(str(tmp_path / "b.qcow2")) == "xz"
    assert detect_compression(str(tmp_path / "c.gz")) is None


def test_names_from_files() -> None:
    assert _strip_name("/x/debian-12.qcow2.xz") == "debian-12.qcow2"
    assert _strip_name("/x/disk.vmdk.gz") == "disk.qcow2"
    assert _strip_name("/x/plain") == "plain.qcow2"
    assert _claimed_format("/x/a.qcow2.zst") == "qcow2"
    assert _claimed_format("/x/a.img") is None
