"""CD-ROM images: ISO 9660 and UDF recognised, anything else refused with what it is."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from virtkit.errors import InvalidInput
from virtkit.services.discimage import (
    DESCRIPTORS_AT,
    HEAD_BYTES,
    SECTOR,
    check_cdrom,
    describe,
    disc_format,
)


def _iso(*, udf: bool = False) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident="TEST", **({"udf": "2.60"} if udf else {}))
    data = b"hello\n"
    extra = {"udf_path": "/HELLO.TXT"} if udf else {}
    iso.add_fp(io.BytesIO(data), len(data), "/HELLO.TXT;1", joliet_path="/hello.txt", **extra)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _descriptor(ident: bytes) -> bytes:
    return (b"\0" + ident + b"\x01").ljust(SECTOR, b"\0")


def _pure_udf() -> bytes:
    """A UDF disc without ISO 9660 descriptors: the volume recognition sequence alone."""
    vrs = b"".join(_descriptor(i) for i in (b"BEA01", b"NSR03", b"TEA01"))
    return (b"\0" * DESCRIPTORS_AT + vrs).ljust(HEAD_BYTES + SECTOR, b"\0")


def test_iso9660_and_udf_bridge_and_pure_udf() -> None:
    assert disc_format(_iso()) == "iso9660"
    assert disc_format(_iso(udf=True)) == "iso9660"  # a bridge disc: ISO 9660 comes first
    assert disc_format(_pure_udf()) == "udf"
    nsr02 = _pure_udf().replace(b"NSR03", b"NSR02")
    assert disc_format(nsr02) == "udf"


def test_iso_hybrid_with_an_mbr_in_front() -> None:
    image = bytearray(_iso())
    image[0:4] = b"\xeb\x63\x90\x00"  # isohybrid's boot code jump
    image[510:512] = b"\x55\xaa"
    image[446 + 4] = 0x17  # a partition entry
    assert disc_format(bytes(image)) == "iso9660"


def test_not_discs() -> None:
    assert disc_format(b"") is None
    assert disc_format(b"root:x:0:0:root:/root:/bin/bash\n") is None
    assert disc_format(b"\0" * HEAD_BYTES) is None
    bea_only = b"\0" * DESCRIPTORS_AT + _descriptor(b"BEA01") + _descriptor(b"TEA01")
    assert disc_format(bea_only.ljust(HEAD_BYTES, b"\0")) is None  # no NSR: not UDF


def test_what_a_non_disc_is() -> None:
    assert describe(b"", 0) == "an empty file"
    assert describe(b"QFI\xfb\0\0\0\x03", 1 << 20) == "a qcow2 disk image"
    assert describe(b"root:x:0:0\n", 11) == "a text file"
    assert describe(b"\x7fELF\0\0", 6) == "too small for a disc image (6 bytes)"
    euros = ("€" * 40000).encode()  # the 4 KiB sample ends inside a character
    assert describe(euros[:HEAD_BYTES], len(euros)) == "a text file"
    text = b"line of text\n" * 10000
    assert describe(text[:HEAD_BYTES], len(text)) == "a text file"
    assert "all zeros" in describe(b"\0" * HEAD_BYTES, 1 << 20)
    noise = bytes(range(256)) * (HEAD_BYTES // 256)
    assert "no ISO 9660 or UDF" in describe(noise, 1 << 20)


class _LocalHost:
    is_local = True


def test_check_local_files(tmp_path: Path) -> None:
    iso = tmp_path / "a.iso"
    iso.write_bytes(_iso())
    check_cdrom(_LocalHost(), str(iso))  # type: ignore[arg-type]
    udf = tmp_path / "u.iso"
    udf.write_bytes(_pure_udf())
    check_cdrom(_LocalHost(), str(udf))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as caught:
        check_cdrom(_LocalHost(), "/etc/passwd")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_cdrom"
    assert str(caught.value).startswith("CD-ROM image /etc/passwd is not an ISO 9660 or UDF image")
    zeros = tmp_path / "zeros.iso"
    zeros.write_bytes(b"\0" * 65536)
    with pytest.raises(InvalidInput, match=f"{zeros} is not an ISO 9660 .*all zeros"):
        check_cdrom(_LocalHost(), str(zeros))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as missing:
        check_cdrom(_LocalHost(), str(tmp_path / "gone.iso"))  # type: ignore[arg-type]
    assert missing.value.code == "image_not_found"


class _RemoteStorage:
    def __init__(self, volumes: dict[str, bytes]) -> None:
        self.volumes = volumes
        self.read: list[tuple[str, int]] = []

    def volume_xml_by_path(self, path: str) -> str | None:
        data = self.volumes.get(path)
        if data is None:
            return None
        return (
            f"<volume><capacity>{len(data)}</capacity><target><path>{path}</path></target></volume>"
        )

    def read_head_by_path(self, path: str, length: int) -> bytes:
        self.read.append((path, length))
        return self.volumes[path][:length]


class _RemoteHost:
    is_local = False
    uri = "qemu+ssh://far/system"

    def __init__(self, storage: Any) -> None:
        self.storage = storage


def test_check_remote_volumes_through_a_stream() -> None:
    storage = _RemoteStorage({"/pool/a.iso": _iso(), "/pool/notes.txt": b"hi\n" * 30000})
    host = _RemoteHost(storage)
    check_cdrom(host, "/pool/a.iso")  # type: ignore[arg-type]
    assert storage.read == [("/pool/a.iso", HEAD_BYTES)]  # the head only, not the whole disc
    with pytest.raises(
        InvalidInput, match=r"/pool/notes\.txt is not an ISO 9660 or UDF image: a text"
    ):
        check_cdrom(host, "/pool/notes.txt")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not a volume in any storage pool"):
        check_cdrom(host, "/elsewhere.iso")  # type: ignore[arg-type]
