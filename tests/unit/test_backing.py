"""Backing chains read from qcow2 headers and from a running VM's disk XML."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from virtkit.services.backing import image_files, local_chain, qcow2_backing
from virtkit.xml.domain import Disk


def _qcow2(path: Path, backing: str | None) -> Path:
    """A qcow2 header naming ``backing`` (enough for the header reader; not a usable image)."""
    name = backing.encode() if backing else b""
    offset = 512 if backing else 0
    header = struct.pack(">4sIQI", b"QFI\xfb", 3, offset, len(name)).ljust(512, b"\0")
    path.write_bytes(header + name)
    return path


def test_header_names_the_backing_file(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    _qcow2(base, None)
    assert qcow2_backing(str(base)) is None
    absolute = _qcow2(tmp_path / "abs.qcow2", str(base))
    assert qcow2_backing(str(absolute)) == str(base)
    (tmp_path / "sub").mkdir()
    relative = _qcow2(tmp_path / "sub" / "rel.qcow2", "../base.qcow2")
    assert qcow2_backing(str(relative)) == str(tmp_path / "sub" / "../base.qcow2")
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 4096)
    assert qcow2_backing(str(raw)) is None
    assert qcow2_backing(str(tmp_path / "missing")) is None


def test_chain_resolves_links_and_stops_at_loops(tmp_path: Path) -> None:
    base = _qcow2(tmp_path / "base.qcow2", None)
    (tmp_path / "link.qcow2").symlink_to(base)
    mid = _qcow2(tmp_path / "mid.qcow2", "link.qcow2")
    top = _qcow2(tmp_path / "top.qcow2", str(mid))
    assert local_chain(str(top)) == [str(mid), str(base)]
    a = tmp_path / "a.qcow2"
    _qcow2(tmp_path / "b.qcow2", str(a))
    _qcow2(a, str(tmp_path / "b.qcow2"))
    assert local_chain(str(a)) == [str(tmp_path / "b.qcow2"), str(a)]  # and no endless loop
    assert sorted(Path(p).name for p in image_files(str(tmp_path))) == sorted(
        ["a.qcow2", "b.qcow2", "base.qcow2", "link.qcow2", "mid.qcow2", "top.qcow2"]
    )


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
def test_what_qemu_img_writes_is_read(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    clone = tmp_path / "clone.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    "base.qcow2", str(clone)], check=True, cwd=tmp_path)  # fmt: skip
    assert local_chain(str(clone)) == [str(base)]


def test_running_vms_disk_xml_names_its_chain() -> None:
    disk = Disk.parse(
        "<disk type='file' device='disk'><source file='/p/vm.qcow2'/>"
        "<backingStore type='file'><format type='qcow2'/><source file='/t/mid.qcow2'/>"
        "<backingStore type='file'><format type='raw'/><source file='/t/base.raw'/>"
        "<backingStore/></backingStore></backingStore><target dev='vda'/></disk>"
    )
    assert disk.backing_sources == ["/t/mid.qcow2", "/t/base.raw"]
    assert Disk.parse("<disk><source file='/x'/></disk>").backing_sources == []
