"""Pools, volumes, image import, templates, clones and hot-plug, against the private libvirtd."""

from __future__ import annotations

import json
import lzma
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Bed, console_log, run_cli, tiny_spec, wait_for_text, write_iso
from virtkit import Client
from virtkit.errors import AlreadyExists, InUse, InvalidInput, InvalidState, NotFound
from virtkit.services.domainbuilder import SPARE_ROOT_PORTS
from virtkit.services.tinyguest import BLOCK_MARKER, VDA_MARKER
from virtkit.specs import MiB, PoolSpec, VolumeSpec, parse_model, parse_vm_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def pool(bed: Bed, vk: Client) -> Iterator[str]:
    """A fresh directory pool with the test prefix; removed with its volumes afterwards."""
    name = "vktest-pool-" + secrets.token_hex(3)
    path = bed.daemon.shared / name
    vk.pools.create_pool(parse_model(PoolSpec, {"name": name, "path": str(path)}, "pool"))
    yield name
    if vk.host.storage.pool_xml(name) is not None:
        if vk.pools.get_pool(name).active:
            for vol in vk.pools.list_volumes(name):
                vk.host.storage.delete_volume(name, vol.name)
        vk.host.storage.remove_pool(name)
    shutil.rmtree(path, ignore_errors=True)


def _qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def _make_image(directory: Path, content: bytes, size: int = 16 * MiB) -> Path:
    """A raw image whose first bytes are ``content`` (what the tiny guest prints from vda)."""
    raw = directory / f"img-{secrets.token_hex(3)}.raw"
    with open(raw, "wb") as f:
        f.write(content)
        f.truncate(size)
    return raw


# -- pools -------------------------------------------------------------------------------------


def test_pool_lifecycle_through_the_cli(bed: Bed, vk: Client) -> None:
    name = "vktest-cli-" + secrets.token_hex(3)
    path = bed.daemon.shared / name
    try:
        created = run_cli(bed, "pool", "create", name, "--path", str(path), "--json")
        assert created.returncode == 0, created.stderr
        info = json.loads(created.stdout)
        assert info["active"] and info["autostart"] and info["path"] == str(path)
        assert path.is_dir()
        listed = {p["name"]: p for p in json.loads(run_cli(bed, "pool", "list", "--json").stdout)}
        assert listed[name]["volumes"] == 0 and listed[name]["available"] > 0
        assert run_cli(bed, "pool", "autostart", name, "off").returncode == 0
        assert not vk.pools.get_pool(name).autostart
        assert run_cli(bed, "volume", "create", "v1.qcow2", "8M", "-p", name).returncode == 0
        refused = run_cli(bed, "pool", "delete", name)
        assert refused.returncode == 1 and "holds 1 volume" in refused.stderr
        assert run_cli(bed, "volume", "delete", "v1.qcow2", "-p", name, "--yes").returncode == 0
        assert run_cli(bed, "pool", "stop", name).returncode == 0
        again = run_cli(bed, "pool", "stop", name)
        assert again.returncode == 1 and "not running" in again.stderr
        assert run_cli(bed, "pool", "start", name).returncode == 0
        assert run_cli(bed, "pool", "refresh", name).returncode == 0
        assert run_cli(bed, "pool", "delete", name, "--delete-dir").returncode == 0
        assert not path.exists() and vk.host.storage.pool_xml(name) is None
    finally:
        if vk.host.storage.pool_xml(name) is not None:
            vk.host.storage.remove_pool(name)
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("netfs", ["--source-host", "198.18.0.1", "--source-path", "/export", "--path", "/mnt/x"]),
        ("logical", ["--source-name", "vgtest", "--source-device", "/dev/vktest-nonexistent"]),
        ("iscsi", ["--source-host", "198.18.0.1", "--source-path", "iqn.2026-11.dev.virtkit:t1"]),
        (
            "rbd",
            [
                "--source-host",
                "198.18.0.1",
                "--source-name",
                "rbdpool",
                "--auth-username",
                "admin",
                "--auth-secret-uuid",
                "8fcd8a41-0a50-4f42-9e2d-7a1a5e7d8f35",
            ],
        ),
    ],
)
def test_other_pool_types_are_defined_from_the_same_spec(
    bed: Bed, vk: Client, kind: str, args: list[str]
) -> None:
    name = f"vktest-{kind}-" + secrets.token_hex(3)
    result = run_cli(bed, "pool", "create", name, "--type", kind, "--no-start", *args, "--json")
    try:
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["type"] == kind and not info["active"] and info["source"]
    finally:
        if vk.host.storage.pool_xml(name) is not None:
            vk.host.storage.remove_pool(name)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--path", "relative/dir"], ["not absolute"]),
        (["--type", "netfs", "--path", "/mnt/x"], ["netfs pool needs", "source_host"]),
        (
            ["--type", "rbd", "--source-host", "h", "--source-name", "p", "--auth-username", "u"],
            ["auth_secret_uuid"],
        ),
        (["--type", "logical"], ["logical pool needs source_name"]),
    ],
)
def test_pool_spec_errors(bed: Bed, args: list[str], words: list[str]) -> None:
    result = run_cli(bed, "pool", "create", "vktest-bad", *args)
    assert result.returncode == 1, result.stderr
    for word in words:
        assert word in result.stderr


def test_pool_path_that_is_a_file(bed: Bed, vk: Client, tmp_path: Path) -> None:
    file = bed.daemon.shared / "vktest-a-file"
    file.write_text("x")
    try:
        result = run_cli(bed, "pool", "create", "vktest-file", "--path", str(file))
        assert result.returncode == 1 and "is a file" in result.stderr
        assert vk.host.storage.pool_xml("vktest-file") is None
    finally:
        file.unlink()


def test_missing_pool_and_volume(bed: Bed, pool: str) -> None:
    assert (
        "no storage pool named 'vktest-nope'" in run_cli(bed, "pool", "show", "vktest-nope").stderr
    )
    missing = run_cli(bed, "volume", "show", "nope.qcow2", "-p", pool)
    assert missing.returncode == 1 and "no volume 'nope.qcow2'" in missing.stderr


# -- volumes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "words"),
    [
        ("a/b.qcow2", "1G", ["invalid volume name"]),
        ("..", "1G", ["invalid volume name"]),
        ("x.qcow2", "0", ["more than 0"]),
        ("x.qcow2", "-1G", ["more than 0"]),
        ("x.qcow2", "12Q", ["unknown size unit"]),
    ],
)
def test_volume_bad_input(
    bed: Bed, pool: str, vk: Client, name: str, size: str, words: list[str]
) -> None:
    result = run_cli(bed, "volume", "create", name, size, "-p", pool)
    assert result.returncode == 1, result.stderr
    assert all(w in result.stderr for w in words), result.stderr
    assert vk.pools.list_volumes(pool) == []


def test_volume_create_resize_and_shrink(bed: Bed, pool: str, vk: Client) -> None:
    sparse = vk.pools.create_volume(pool, VolumeSpec(name="r.raw", size="8M", format="raw"))
    assert sparse.allocation == 0  # thin unless preallocation is asked for
    info = vk.pools.create_volume(pool, VolumeSpec(name="q.qcow2", size="32M"))
    assert info.format == "qcow2" and info.capacity == 32 * MiB
    described = _qemu_img("info", info.path)
    assert "virtual size: 32 MiB" in described and "compat: 1.1" in described  # qcow2 v3
    with pytest.raises(AlreadyExists):
        vk.pools.create_volume(pool, VolumeSpec(name="q.qcow2", size="32M"))
    refused = run_cli(bed, "volume", "resize", "r.raw", "4M", "-p", pool)
    assert refused.returncode == 1 and "--shrink" in refused.stderr
    assert run_cli(bed, "volume", "resize", "r.raw", "16M", "-p", pool).returncode == 0
    assert vk.pools.get_volume(pool, "r.raw").capacity == 16 * MiB
    # libvirt shrinks only above what is allocated: a sparse qcow2 can shrink
    shrunk = run_cli(bed, "volume", "resize", "q.qcow2", "16M", "--shrink", "-p", pool)
    assert shrunk.returncode == 0, shrunk.stderr
    assert vk.pools.get_volume(pool, "q.qcow2").capacity == 16 * MiB


def test_full_preallocation_that_does_not_fit(bed: Bed, vk: Client) -> None:
    small = bed.daemon.shared / "small"  # a 32 MiB tmpfs, mounted before libvirtd started
    name = "vktest-small-" + secrets.token_hex(3)
    vk.pools.create_pool(parse_model(PoolSpec, {"name": name, "path": str(small)}, "pool"))
    try:
        result = run_cli(
            bed,
            "volume",
            "create",
            "big.raw",
            "64M",
            "--format",
            "raw",
            "--preallocation",
            "full",
            "-p",
            name,
        )
        assert result.returncode == 1 and "does not fit" in result.stderr
        assert vk.pools.list_volumes(name) == [] and not list(small.iterdir())
    finally:
        vk.host.storage.remove_pool(name)


def test_upload_download_round_trip(bed: Bed, pool: str, vk: Client, tmp_path: Path) -> None:
    data = secrets.token_bytes(3 * MiB + 123)
    vk.pools.create_volume(pool, VolumeSpec(name="blob.raw", size=f"{len(data)}b", format="raw"))
    source = tmp_path / "up.bin"
    source.write_bytes(data)
    assert run_cli(bed, "volume", "upload", "blob.raw", str(source), "-p", pool).returncode == 0
    target = tmp_path / "down.bin"
    down = run_cli(bed, "volume", "download", "blob.raw", str(target), "-p", pool)
    assert down.returncode == 0, down.stderr
    assert target.read_bytes() == data
    again = run_cli(bed, "volume", "download", "blob.raw", str(target), "-p", pool)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    too_big = tmp_path / "big.bin"
    too_big.write_bytes(data + b"x")
    refused = run_cli(bed, "volume", "upload", "blob.raw", str(too_big), "-p", pool)
    assert refused.returncode == 1 and "does not fit" in refused.stderr


def test_volume_in_use_cannot_be_deleted(bed: Bed, pool: str, vm_name: str, vk: Client) -> None:
    info = vk.pools.create_volume(pool, VolumeSpec(name="used.qcow2", size="16M"))
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"path": info.path}])))
    result = run_cli(bed, "volume", "delete", "used.qcow2", "-p", pool, "--yes")
    assert result.returncode == 1 and f"used by VM(s) {vm_name}" in result.stderr
    assert vk.pools.get_volume(pool, "used.qcow2").used_by == [vm_name]


# -- images and templates ----------------------------------------------------------------------


def test_import_converts_checks_and_detects_duplicates(
    bed: Bed, pool: str, vk: Client, tmp_path: Path
) -> None:
    raw = _make_image(tmp_path, b"IMPORTED-CONTENT")
    qcow2 = tmp_path / "disk.qcow2"
    _qemu_img("convert", "-O", "qcow2", str(raw), str(qcow2))
    packed = tmp_path / "disk.qcow2.xz"
    packed.write_bytes(lzma.compress(qcow2.read_bytes()))
    digest = subprocess.run(
        ["sha256sum", str(packed)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    result = run_cli(
        bed, "image", "import", str(packed), "-p", pool, "--checksum", f"sha256:{digest}", "--json"
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == "disk.qcow2" and info["format"] == "qcow2" and info["sha256"] == digest
    _qemu_img("compare", str(raw), info["path"])  # raises if the content differs
    again = run_cli(bed, "image", "import", str(packed), "-p", pool, "--name", "other.qcow2")
    assert again.returncode == 1 and "imported already" in again.stderr
    listed = json.loads(run_cli(bed, "image", "list", "--json").stdout)
    assert any(i["path"] == info["path"] for i in listed)


@pytest.mark.parametrize("case", ["text-as-qcow2", "corrupt-xz", "bad-checksum", "vmdk"])
def test_import_refusals_leave_nothing(
    bed: Bed, pool: str, vk: Client, tmp_path: Path, case: str
) -> None:
    extra: list[str] = []
    if case == "text-as-qcow2":
        file = tmp_path / "notes.qcow2"
        file.write_text("this is not a disk image\n")
        word = "not a qcow2 image"
    elif case == "corrupt-xz":
        file = tmp_path / "disk.raw.xz"
        file.write_bytes(lzma.compress(secrets.token_bytes(MiB))[:2000])
        word = "corrupt .xz"
    elif case == "bad-checksum":
        file = _make_image(tmp_path, b"X")
        extra = ["--checksum", "sha256:" + "0" * 64]
        word = "checksum mismatch"
    else:
        raw = _make_image(tmp_path, b"VMDK-CONTENT")
        file = tmp_path / "disk.vmdk"
        _qemu_img("convert", "-O", "vmdk", str(raw), str(file))
        result = run_cli(bed, "image", "import", str(file), "-p", pool, "--json")
        assert result.returncode == 0, result.stderr
        _qemu_img("compare", str(raw), json.loads(result.stdout)["path"])
        return
    result = run_cli(bed, "image", "import", str(file), "-p", pool, *extra)
    assert result.returncode == 1 and word in result.stderr, result.stderr
    assert vk.pools.list_volumes(pool) == []
    assert not list((bed.settings.cache_dir / "work").glob("import-*"))


@pytest.fixture
def template(bed: Bed, vk: Client, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A template in the VM pool whose disk starts with TEMPLATE-DATA-42; the raw original."""
    raw = _make_image(tmp_path, b"TEMPLATE-DATA-42")
    name = f"vktest-tpl-{secrets.token_hex(3)}.qcow2"
    from virtkit.services import storage

    s = bed.settings
    storage.ensure_pool(vk.host, s.storage_pool, s.storage_pool_path)
    vk.images.import_image(str(raw), s.storage_pool, name)
    vk.images.set_template(s.storage_pool, name, os_name="tiny")
    yield name, raw
    if vk.host.storage.volume_xml_by_path(str(s.storage_pool_path / name)) is not None:
        vk.host.storage.delete_volume(s.storage_pool, name)


def test_linked_clone_reads_the_template_and_writes_only_to_itself(
    bed: Bed, vm_name: str, vk: Client, template: tuple[str, Path], tmp_path: Path
) -> None:
    name, raw = template
    g = bed.guest
    result = run_cli(
        bed,
        "vm",
        "create",
        vm_name,
        "--image",
        name,
        "--memory",
        "128M",
        "--kernel",
        g.kernel,
        "--initrd",
        g.initrd,
        "--cmdline",
        g.cmdline + " virtkit.write=CLONE-WROTE",
        "--start",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    disk = json.loads(result.stdout)["disks"][0]
    assert disk["owned"]
    wait_for_text(bed, vm_name)
    assert f"{VDA_MARKER} TEMPLATE-DATA-42" in console_log(bed, vm_name)
    volume = vk.pools.get_volume(bed.settings.storage_pool, Path(disk["source"]).name)
    assert volume.backing == str(bed.settings.storage_pool_path / name)
    assert vk.vms.shutdown(vm_name, timeout=30) == "shutdown"
    # the clone has the write; the template does not
    flat = tmp_path / "clone.raw"
    _qemu_img("convert", "-O", "raw", disk["source"], str(flat))
    assert flat.read_bytes()[4096:4107] == b"CLONE-WROTE"
    _qemu_img("compare", str(raw), str(bed.settings.storage_pool_path / name))
    # a template with linked clones cannot be deleted; the error names them
    refused = run_cli(bed, "volume", "delete", name, "--yes")
    assert refused.returncode == 1 and Path(disk["source"]).name in refused.stderr
    images = {
        i["name"]: i
        for i in json.loads(run_cli(bed, "image", "list", "--templates", "--json").stdout)
    }
    assert images[name]["template"] and images[name]["clones"]


def test_full_clone_and_vm_clone_are_independent(
    bed: Bed, vm_name: str, vk: Client, template: tuple[str, Path]
) -> None:
    name, _raw = template
    spec = tiny_spec(bed, vm_name, disks=[{"image": name, "linked": False, "size": "32M"}])
    info = vk.vms.create(parse_vm_spec(spec))
    volume = vk.pools.get_volume(bed.settings.storage_pool, Path(info.disks[0].source or "").name)
    assert volume.backing is None and volume.capacity == 32 * MiB
    copy = vm_name + "-copy"
    try:
        cloned = run_cli(bed, "vm", "clone", vm_name, copy, "--json")
        assert cloned.returncode == 0, cloned.stderr
        clone = json.loads(cloned.stdout)
        assert clone["uuid"] != info.uuid
        assert clone["disks"][0]["source"] != info.disks[0].source and clone["disks"][0]["owned"]
        vk.vms.start(copy)
        wait_for_text(bed, copy)
        assert f"{VDA_MARKER} TEMPLATE-DATA-42" in console_log(bed, copy)
        with pytest.raises(AlreadyExists):
            vk.vms.clone(vm_name, copy)
        with pytest.raises(InvalidState, match="cannot clone"):
            vk.vms.clone(copy, copy + "2")  # running
        # the copy does not need its source: delete the source and boot the copy again
        vk.vms.delete(vm_name, remove_storage=True)
        vk.vms.stop(copy)
        vk.vms.start(copy)
        wait_for_text(bed, copy)  # the console log starts afresh with each start
        assert f"{VDA_MARKER} TEMPLATE-DATA-42" in console_log(bed, copy)
    finally:
        vk.vms.delete(copy, force=True, remove_storage=True)
    assert not any(p.name.startswith(copy) for p in bed.pool_dir.iterdir())


def test_template_errors(bed: Bed, vm_name: str, vk: Client, template: tuple[str, Path]) -> None:
    name, _raw = template
    with pytest.raises(InvalidInput, match="smaller than template"):
        vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"image": name, "size": "1M"}])))
    vk.images.set_template(bed.settings.storage_pool, name, on=False)
    with pytest.raises(InvalidInput, match="is not a template"):
        vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"image": name}])))
    with pytest.raises(NotFound):
        vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"image": "nope.qcow2"}])))
    assert not vk.host.exists(vm_name)


# -- disks on a running VM ---------------------------------------------------------------------


def test_hot_plug_a_disk_into_a_running_guest(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)), start=True)
    wait_for_text(bed, vm_name, f"{BLOCK_MARKER} []")  # booted with no disk at all
    attached = run_cli(bed, "vm", "disk", "attach", vm_name, "16M")
    assert attached.returncode == 0, attached.stderr
    assert "as vda" in attached.stdout
    wait_for_text(bed, vm_name, f"{BLOCK_MARKER} [vda]", timeout=30)  # the guest saw it arrive
    disks = json.loads(run_cli(bed, "vm", "disk", "list", vm_name, "--json").stdout)
    assert [d["target"] for d in disks] == ["vda"] and disks[0]["owned"]
    volume = vk.pools.get_volume(bed.settings.storage_pool, f"{vm_name}-disk0.qcow2")
    assert vm_name in volume.used_by
    assert disks[0]["source"] in vk.vms.storage_to_remove(vm_name)
    # a new PCIe VM keeps SPARE_ROOT_PORTS free ports, whatever its own devices took: as many
    # disks again go in while it runs
    for _ in range(SPARE_ROOT_PORTS - 1):
        more = run_cli(bed, "vm", "disk", "attach", vm_name, "16M")
        assert more.returncode == 0, more.stderr
    wait_for_text(bed, vm_name, f"{BLOCK_MARKER} [vda vdb vdc vdd]", timeout=30)
    for target in ("vdb", "vdc", "vdd"):
        gone = run_cli(bed, "vm", "disk", "detach", vm_name, target, "--remove-storage")
        assert gone.returncode == 0, gone.stderr
    wait_for_text(bed, vm_name, f"{BLOCK_MARKER} [vda]", count=2, timeout=30)
    detached = run_cli(bed, "vm", "disk", "detach", vm_name, "vda", "--remove-storage")
    assert detached.returncode == 0, detached.stderr
    assert "removed" in detached.stdout
    wait_for_text(bed, vm_name, f"{BLOCK_MARKER} []", count=2, timeout=30)  # and it went
    assert json.loads(run_cli(bed, "vm", "disk", "list", vm_name, "--json").stdout) == []
    assert not (bed.pool_dir / f"{vm_name}-disk0.qcow2").exists()
    assert disks[0]["source"] not in vk.vms.storage_to_remove(vm_name)  # nothing promised
    with pytest.raises(NotFound):
        vk.disks.detach(vm_name, "vdz")


def test_cdrom_change_and_eject(bed: Bed, vm_name: str, vk: Client) -> None:
    first = bed.daemon.shared / f"{vm_name}-1.iso"
    second = bed.daemon.shared / f"{vm_name}-2.iso"
    for iso in (first, second):
        write_iso(iso)
    try:
        vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, cdrom=str(first))), start=True)
        assert run_cli(bed, "vm", "cdrom", "change", vm_name, str(second)).returncode == 0
        cdrom = next(d for d in vk.vms.get(vm_name).disks if d.device == "cdrom")
        assert cdrom.source == str(second)
        refused = run_cli(bed, "vm", "cdrom", "change", vm_name, "/etc/passwd")
        assert refused.returncode == 1
        assert "/etc/passwd is not an ISO 9660 or UDF image: a text file" in refused.stderr
        cdrom = next(d for d in vk.vms.get(vm_name).disks if d.device == "cdrom")
        assert cdrom.source == str(second)  # the disc in the drive stays
        assert run_cli(bed, "vm", "cdrom", "eject", vm_name).returncode == 0
        cdrom = next(d for d in vk.vms.get(vm_name).disks if d.device == "cdrom")
        assert cdrom.source is None
        with pytest.raises(InvalidInput, match="CD-ROM"):
            vk.disks.detach(vm_name, cdrom.target)
    finally:
        first.unlink()
        second.unlink()


def test_template_is_never_attached_writable(
    bed: Bed, vm_name: str, vk: Client, template: tuple[str, Path]
) -> None:
    name, _raw = template
    path = str(bed.settings.storage_pool_path / name)
    result = run_cli(bed, "vm", "create", vm_name, "--kernel", bed.guest.kernel, "--disk", path)
    assert result.returncode == 1 and "is a template" in result.stderr
    spec = tiny_spec(bed, vm_name, disks=[{"path": path, "readonly": True}])
    assert vk.vms.create(parse_vm_spec(spec)).disks[0].readonly


def test_bases_of_linked_clones_are_protected(
    bed: Bed, vm_name: str, vk: Client, template: tuple[str, Path], tmp_path: Path
) -> None:
    name, _raw = template
    pool = bed.settings.storage_pool
    # a VM whose disk is no template cannot be cloned linked
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"size": "16M"}])))
    refused = run_cli(bed, "vm", "clone", vm_name, vm_name + "-l", "--linked")
    assert refused.returncode == 1 and "not a template" in refused.stderr
    assert not vk.host.exists(vm_name + "-l")
    # a template cannot be written or resized, and stays one while clones build on it
    upload = tmp_path / "x.bin"
    upload.write_bytes(b"x" * 4096)
    result = run_cli(bed, "volume", "upload", name, str(upload), "-p", pool)
    assert result.returncode == 1 and "is a template" in result.stderr
    result = run_cli(bed, "volume", "resize", name, "64M", "-p", pool)
    assert result.returncode == 1 and "is a template" in result.stderr
    vk.pools.clone_volume(pool, name, f"{vm_name}-on-tpl.qcow2", linked=True)
    result = run_cli(bed, "image", "template", name, "-p", pool, "--off")
    assert result.returncode == 1 and f"{vm_name}-on-tpl.qcow2" in result.stderr
    vk.host.storage.delete_volume(pool, f"{vm_name}-on-tpl.qcow2")


def test_import_refuses_images_that_pull_in_other_files(
    bed: Bed, pool: str, vk: Client, tmp_path: Path
) -> None:
    descriptor = tmp_path / "split.vmdk"
    _qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(descriptor), "1M")
    result = run_cli(bed, "image", "import", str(descriptor), "-p", pool)
    assert result.returncode == 1 and "other files" in result.stderr, result.stderr
    assert vk.pools.list_volumes(pool) == []


def test_import_through_a_stream(bed: Bed, pool: str, vk: Client, tmp_path: Path) -> None:
    """The path remote hosts take: convert on the client, send through a libvirt stream."""
    raw = _make_image(tmp_path, b"STREAMED-CONTENT", size=8 * MiB)
    result = run_cli(bed, "image", "import", str(raw), "-p", pool, "--stream", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "qcow2" and info["capacity"] == 8 * MiB
    _qemu_img("compare", str(raw), info["path"])


def test_a_volume_removed_behind_libvirts_back_does_not_break_the_pool(
    bed: Bed, pool: str, vk: Client
) -> None:
    """libvirt lists volumes as of its last refresh: a file deleted by hand in between must not
    make the pool (or its volume list) an error."""
    for name in ("keep.qcow2", "gone.qcow2"):
        assert run_cli(bed, "volume", "create", name, "1M", "--pool", pool).returncode == 0
    Path(vk.pools.get_volume(pool, "gone.qcow2").path).unlink()
    assert vk.pools.get_pool(pool).volumes == 1
    listed = run_cli(bed, "volume", "list", "--pool", pool, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["name"] for v in json.loads(listed.stdout)] == ["keep.qcow2"]


def test_bases_stay_protected_when_the_clones_pool_is_stopped(
    bed: Bed, pool: str, vm_name: str, vk: Client, tmp_path: Path
) -> None:
    """Linked clones are found from the images' own headers and the VMs' definitions, not
    from listings of running pools: a stopped pool hides its volumes from libvirt."""
    vk.images.import_image(str(_make_image(tmp_path, b"BASE")), pool, "base.qcow2")
    base = vk.pools.get_volume(pool, "base.qcow2")
    clones = f"{pool}-clones"
    clones_dir = bed.daemon.shared / clones
    vk.pools.create_pool(parse_model(PoolSpec, {"name": clones, "path": str(clones_dir)}, "pool"))
    overlay = bed.daemon.shared / f"{vm_name}-overlay.qcow2"
    try:
        vk.pools.clone_volume(pool, "base.qcow2", "clone.qcow2", linked=True, target_pool=clones)
        vk.pools.stop_pool(clones)
        upload = tmp_path / "x.bin"
        upload.write_bytes(b"x" * 4096)
        for args in (
            ["volume", "delete", "base.qcow2", "-p", pool, "--yes"],
            ["volume", "resize", "base.qcow2", "64M", "-p", pool],
            ["volume", "upload", "base.qcow2", str(upload), "-p", pool],
        ):
            refused = run_cli(bed, *args)
            assert refused.returncode == 1, (args, refused.stdout)
            assert f"{clones}/clone.qcow2 (pool stopped)" in refused.stderr, refused.stderr
        # nor may a VM write into it
        with pytest.raises(InUse) as writable:
            vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"path": base.path}])))
        assert writable.value.code == "volume_has_clones" and not vk.host.exists(vm_name)
        # a VM's disk in no pool at all, overlaid on the base: found through the VM
        _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.path, str(overlay))
        vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"path": str(overlay)}])))
        with pytest.raises(InUse, match=rf"{overlay} \(disk of VM {vm_name}\)"):
            vk.pools.delete_volume(pool, "base.qcow2")
        vk.vms.delete(vm_name)
        vk.pools.start_pool(clones)
        vk.host.storage.delete_volume(clones, "clone.qcow2")
        overlay.unlink()
        vk.pools.delete_volume(pool, "base.qcow2")  # nothing builds on it any more
    finally:
        overlay.unlink(missing_ok=True)
        if not vk.pools.get_pool(clones).active:
            vk.pools.start_pool(clones)
        for vol in vk.pools.list_volumes(clones):
            vk.host.storage.delete_volume(clones, vol.name)
        vk.host.storage.remove_pool(clones)
        shutil.rmtree(clones_dir, ignore_errors=True)
