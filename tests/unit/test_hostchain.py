"""A file inside a pool must not lead QEMU out of it: a qcow2 image's backing chain and data file
are checked link by link for callers without ``host.path``, on real images made by qemu-img in a
temporary directory that stands for a pool's target."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtkit.errors import PermissionDenied
from virtkit.services.hostpaths import (
    DiskUse,
    NamedImage,
    PoolTarget,
    check_host_paths,
    vm_spec_paths,
    with_disk_formats,
)
from virtkit.specs.vm import VMSpec

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
FIELD = "disks[0].path"


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A ``vkchain-`` directory holding ``pool`` (the pool's target) and ``outside``."""
    top = Path(tempfile.mkdtemp(prefix="vkchain-"))
    (top / "pool").mkdir()
    (top / "outside").mkdir()
    (top / "outside" / "vkchain-secret").write_bytes(b"root:x:0:0\n" * 100)
    yield top
    shutil.rmtree(top)


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True, timeout=60)


def qcow2(path: Path, *options: str | Path) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", *options, path, "1M")
    return path


def decide(
    tmp: Path,
    path: Path | str,
    fmt: str | None = None,
    role: str = "operator",
    *,
    readonly: bool = False,
    uses: tuple[DiskUse, ...] = (),
) -> str:
    """The format the rule decides for one disk image, or PermissionDenied; ``uses``: the
    disks of the VMs on the host."""
    pools = [PoolTarget("vms", "dir", True, str(tmp / "pool"))]
    formats = check_host_paths(
        [NamedImage(FIELD, str(path), fmt, readonly)],
        role=role,
        local=True,
        pools=lambda: pools,
        uses=lambda: uses,
    )
    return formats.get(FIELD, "(none)")


def refused(
    tmp: Path,
    path: Path,
    fmt: str | None = None,
    *,
    readonly: bool = False,
    uses: tuple[DiskUse, ...] = (),
) -> str:
    with pytest.raises(PermissionDenied) as caught:
        decide(tmp, path, fmt, readonly=readonly, uses=uses)
    err = caught.value
    assert err.code == "host_path_forbidden" and err.http_status == 403
    assert f"{FIELD} {str(path)!r}" in err.message and "'host.path'" in err.message
    return err.message


def test_a_qcow2_backed_by_a_host_file_is_refused_whatever_its_format_says(tmp: Path) -> None:
    image = qcow2(tmp / "pool" / "vkchain-x.qcow2", "-b", "/etc/passwd", "-F", "raw")
    for fmt in (None, "qcow2"):  # detected from its magic, or asked for
        message = refused(tmp, image, fmt)
        assert "backing file '/etc/passwd'" in message
    assert decide(tmp, image, "raw") == "raw"  # as raw QEMU reads no header
    assert decide(tmp, image, role="admin") == "(none)"  # admins: as before, nothing decided


def test_a_data_file_outside_the_pools_is_refused_inside_allowed(tmp: Path) -> None:
    data = tmp / "outside" / "vkchain-data.raw"
    qemu_img("create", "-q", "-f", "raw", data, "1M")
    image = qcow2(tmp / "pool" / "vkchain-d.qcow2", "-o", f"data_file={data}")
    assert f"data file {str(data)!r}" in refused(tmp, image)
    data.rename(tmp / "pool" / data.name)
    image.unlink()
    image = qcow2(image, "-o", f"data_file={tmp / 'pool' / data.name}")
    assert decide(tmp, image) == "qcow2"


def test_a_chain_of_two_images_inside_the_pool_is_allowed(tmp: Path) -> None:
    pool = tmp / "pool"
    qcow2(pool / "vkchain-base.qcow2")
    (pool / "sub").mkdir()
    qcow2(pool / "sub" / "vkchain-mid.qcow2", "-b", pool / "vkchain-base.qcow2", "-F", "qcow2")
    top = qcow2(pool / "sub" / "vkchain-top.qcow2", "-b", "vkchain-mid.qcow2", "-F", "qcow2")
    assert decide(tmp, top) == "qcow2"  # a relative name: beside the image
    assert decide(tmp, pool / "sub" / ".." / "sub" / "vkchain-top.qcow2", "qcow2") == "qcow2"
    raw = pool / "vkchain-plain.img"
    raw.write_bytes(b"\0" * 4096)
    assert decide(tmp, raw) == "raw"
    assert decide(tmp, qcow2(pool / "vkchain-on-raw.qcow2", "-b", raw, "-F", "raw")) == "qcow2"


def test_a_chain_whose_second_link_leaves_the_pool_is_refused(tmp: Path) -> None:
    pool, secret = tmp / "pool", tmp / "outside" / "vkchain-secret"
    mid = qcow2(pool / "vkchain-mid.qcow2", "-b", secret, "-F", "raw")
    top = qcow2(pool / "vkchain-top.qcow2", "-b", mid, "-F", "qcow2")
    message = refused(tmp, top)
    assert f"backing file {str(secret)!r} (of {str(mid)!r})" in message
    outside = qcow2(tmp / "outside" / "vkchain-base.qcow2")
    up = qcow2(pool / "vkchain-up.qcow2", "-b", "../outside/vkchain-base.qcow2", "-F", "qcow2")
    message = refused(tmp, up)  # a relative name leading out: named, and where it leads
    assert f"'../outside/vkchain-base.qcow2' resolves to {str(outside)!r}" in message


def test_a_symlinked_backing_path_that_escapes_is_refused(tmp: Path) -> None:
    pool, secret = tmp / "pool", tmp / "outside" / "vkchain-secret"
    (pool / "vkchain-link").symlink_to(secret)
    top = qcow2(pool / "vkchain-top.qcow2", "-b", pool / "vkchain-link", "-F", "raw")
    assert f"'{pool}/vkchain-link' resolves to {str(secret)!r}" in refused(tmp, top)
    (pool / "vkchain-dir").symlink_to(tmp / "outside")
    qcow2(tmp / "outside" / "vkchain-base.qcow2")
    via = qcow2(pool / "vkchain-via.qcow2", "-b", "vkchain-dir/vkchain-base.qcow2", "-F", "qcow2")
    refused(tmp, via)
    # an image inside the pool named through a directory link that leads out: QEMU takes a
    # relative backing name beside the image as named, so that is checked too
    inner = pool / "inner"
    inner.mkdir()
    qcow2(inner / "vkchain-real.qcow2", "-u", "-b", "vkchain-sibling.qcow2", "-F", "qcow2")
    (tmp / "outside" / "vkchain-real.qcow2").symlink_to(inner / "vkchain-real.qcow2")
    named = pool / "vkchain-dir" / "vkchain-real.qcow2"
    sibling = tmp / "outside" / "vkchain-sibling.qcow2"
    assert f"resolves to {str(sibling)!r}" in refused(tmp, named)


def test_unknown_formats_names_and_unreadable_images_are_refused(tmp: Path) -> None:
    pool = tmp / "pool"
    qemu_img("create", "-q", "-f", "vmdk", pool / "vkchain-base.vmdk", "1M")
    on_vmdk = qcow2(pool / "vkchain-v.qcow2", "-b", pool / "vkchain-base.vmdk", "-F", "vmdk")
    assert "format 'vmdk'" in refused(tmp, on_vmdk)
    json_name = 'json:{"driver":"file","filename":"/etc/passwd"}'
    via_json = qcow2(pool / "vkchain-j.qcow2", "-u", "-b", json_name, "-F", "raw")
    assert "not a plain file path" in refused(tmp, via_json)
    nbd = qcow2(pool / "vkchain-n.qcow2", "-u", "-b", "nbd://127.0.0.1:1/x", "-F", "raw")
    assert "not a plain file path" in refused(tmp, nbd)
    zeros = pool / "vkchain-zeros.img"
    zeros.write_bytes(b"\0" * 4096)
    assert "cannot be inspected" in refused(tmp, zeros, "qcow2")
    assert "cannot be inspected" in refused(tmp, pool / "vkchain-missing.qcow2", "qcow2")
    assert decide(tmp, pool / "vkchain-missing.img") == "raw"  # the service reports it


def test_a_backing_file_without_a_recorded_format_is_refused(tmp: Path) -> None:
    pool = tmp / "pool"
    qcow2(pool / "vkchain-base.qcow2")
    top = qcow2(pool / "vkchain-top.qcow2", "-b", pool / "vkchain-base.qcow2", "-F", "qcow2")
    header = bytearray(top.read_bytes())
    at = header.index(bytes.fromhex("e2792aca"))  # the backing format header extension
    header[at : at + 4] = bytes.fromhex("0badf00d")  # now an unknown one, which qemu skips
    top.write_bytes(bytes(header))
    assert "no recorded format" in refused(tmp, top)


def test_a_loop_is_refused(tmp: Path) -> None:
    pool = tmp / "pool"
    a = qcow2(pool / "vkchain-a.qcow2")
    b = qcow2(pool / "vkchain-b.qcow2", "-b", a, "-F", "qcow2")
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", b, "-F", "qcow2", a)
    assert "loops" in refused(tmp, b)


def test_the_decided_formats_go_into_the_spec(tmp: Path) -> None:
    pool = tmp / "pool"
    image = qcow2(pool / "vkchain-top.qcow2")
    raw = pool / "vkchain-raw.img"
    raw.write_bytes(b"\0" * 512)
    spec = VMSpec.model_validate(
        {
            "name": "vkchain-vm",
            "kernel": str(raw),
            "disks": [{"size": "1G"}, {"path": str(image)}, {"path": str(raw), "format": "raw"}],
        }
    )
    pools = [PoolTarget("vms", "dir", True, str(pool))]
    formats = check_host_paths(
        vm_spec_paths(spec), role="operator", local=True, pools=lambda: pools, uses=list
    )
    assert formats == {"disks[1].path": "qcow2", "disks[2].path": "raw"}
    pinned = with_disk_formats(spec, formats)
    assert [d.format for d in pinned.disks] == [None, "qcow2", "raw"]
    assert with_disk_formats(spec, {}) is spec


# -- one file, one format: what a guest writes raw, no other VM reads as qcow2 ---------------


def use(path: Path, fmt: str, *, writable: bool = True, vm: str = "vkchain-other") -> DiskUse:
    return DiskUse(vm, "vdb", str(path), fmt, writable)


def test_a_file_a_vm_reads_as_qcow2_is_not_given_raw_and_writable(tmp: Path) -> None:
    image = qcow2(tmp / "pool" / "vkchain-f.qcow2")
    held = (use(image, "qcow2"),)
    message = refused(tmp, image, "raw", uses=held)
    assert "as writable raw" in message and "VM 'vkchain-other' (vdb)" in message
    assert "opens it as qcow2" in message
    # named another way (a symlink, ..): the same file
    (tmp / "pool" / "vkchain-alias").symlink_to(image)
    refused(tmp, tmp / "pool" / "vkchain-alias", "raw", uses=held)
    assert decide(tmp, image, "raw", readonly=True, uses=held) == "raw"  # writes nothing
    assert decide(tmp, image, uses=held) == "qcow2"  # the same format: fine
    assert decide(tmp, image, "raw", role="admin", uses=held) == "(none)"
    other = tmp / "pool" / "vkchain-g.img"
    other.write_bytes(b"\0" * 512)
    assert decide(tmp, other, "raw", uses=held) == "raw"  # another file


def test_a_file_a_vm_writes_raw_is_not_read_as_qcow2(tmp: Path) -> None:
    image = qcow2(tmp / "pool" / "vkchain-f.qcow2")  # a clean header, for now
    message = refused(tmp, image, uses=(use(image, "raw"),))
    assert "would be opened as qcow2" in message and "as writable raw" in message
    refused(tmp, image, "qcow2", readonly=True, uses=(use(image, "raw"),))  # qcow2 reads headers
    # a read-only raw reader (a CD-ROM, a readonly disk) writes no header: it does not count
    assert decide(tmp, image, uses=(use(image, "raw", writable=False),)) == "qcow2"
    # any other format counts, read-only or not
    assert "as vmdk" in refused(tmp, image, uses=(use(image, "vmdk", writable=False),))


def test_every_file_of_the_chain_keeps_its_format(tmp: Path) -> None:
    pool = tmp / "pool"
    base = qcow2(pool / "vkchain-base.qcow2")
    top = qcow2(pool / "vkchain-top.qcow2", "-b", base, "-F", "qcow2")
    message = refused(tmp, top, uses=(use(base, "raw"),))
    assert f"(its backing file {str(base)!r})" in message
    # a backing file is opened read-only: a VM reading it as read-only raw is no clash
    assert decide(tmp, top, uses=(use(base, "raw", writable=False),)) == "qcow2"
    # a data file holds the guest's bytes raw: no VM may read it as qcow2
    data = pool / "vkchain-data.raw"
    qemu_img("create", "-q", "-f", "raw", data, "1M")
    with_data = qcow2(pool / "vkchain-d.qcow2", "-o", f"data_file={data}")
    message = refused(tmp, with_data, uses=(use(data, "qcow2", writable=False),))
    assert f"(its data file {str(data)!r}) would be opened as writable raw" in message
    assert decide(tmp, with_data, readonly=True, uses=(use(data, "qcow2"),)) == "qcow2"


def test_one_request_does_not_name_one_file_in_two_formats(tmp: Path) -> None:
    pool = tmp / "pool"
    image = qcow2(pool / "vkchain-f.qcow2")
    pools = [PoolTarget("vms", "dir", True, str(pool))]

    def check(*disks: dict[str, object]) -> dict[str, str]:
        spec = VMSpec.model_validate({"name": "vkchain-vm", "disks": list(disks)})
        return check_host_paths(
            vm_spec_paths(spec), role="operator", local=True, pools=lambda: pools, uses=list
        )

    with pytest.raises(PermissionDenied) as caught:
        check({"path": str(image)}, {"path": str(image), "format": "raw"})
    assert "disks[1].path" in caught.value.message and "disks[0].path" in caught.value.message
    assert check({"path": str(image)}, {"path": str(image), "format": "raw", "readonly": True})
