"""Bad input: one clear line, exit status 1, no traceback, nothing left behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli, tiny_spec
from virtkit import Client
from virtkit.backend.faults import FaultyHost
from virtkit.errors import AlreadyExists, BackendError, InvalidInput, VirtkitError
from virtkit.services import storage
from virtkit.specs import parse_vm_spec

pytestmark = pytest.mark.integration


def _domains(vk: Client) -> set[str]:
    return {g.name for g in vk.host.list_guests()}


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def _pools(vk: Client) -> set[str]:
    return {p.name() for p in vk.connection.get().listAllStoragePools()}


@pytest.fixture
def untouched(bed: Bed, vk: Client) -> Iterator[None]:
    """Asserts that the test left no domain, pool, disk file or console log behind."""
    before = _domains(vk), _pools(vk), _files(bed.pool_dir), _files(bed.log_dir)
    yield
    assert (_domains(vk), _pools(vk), _files(bed.pool_dir), _files(bed.log_dir)) == before


def assert_one_line_error(result: object, *words: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 1, (result.returncode, stderr)  # type: ignore[attr-defined]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


BAD_NAMES = [
    ("../x", "'../x'"),
    ("", "empty"),
    ("x" * 300, "300 characters"),
    ("has space", "no spaces"),
    ("tab\there", "control characters"),
]


@pytest.mark.parametrize(
    ("name", "word"), BAD_NAMES, ids=["dotdot", "empty", "long", "space", "control"]
)
def test_invalid_names(bed: Bed, untouched: None, name: str, word: str) -> None:
    g = bed.guest
    result = run_cli(bed, "vm", "create", name, "--kernel", g.kernel, "--memory", "128M")
    assert_one_line_error(result, "name", word)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--memory", "0"], ["memory", "at least 16 MiB"]),
        (["--memory", "-5G"], ["memory"]),
        (["--memory", "100T"], ["memory", "more than the host"]),
        (["--memory", "12 parsecs"], ["memory", "unit"]),
        (["--vcpus", "0"], ["vCPUs", "at least 1"]),
        (["--vcpus", "100000"], ["vCPUs", "allows"]),
        (["--machine", "pc-nonsense-1.0"], ["unknown machine type", "pc-nonsense-1.0"]),
        (["--disk", "/nonexistent/disk.qcow2"], ["/nonexistent/disk.qcow2", "does not exist"]),
        (["--cdrom", "/nonexistent.iso"], ["/nonexistent.iso", "does not exist"]),
        (["--cdrom", "/etc/passwd"], ["/etc/passwd", "not an ISO 9660 or UDF image", "text"]),
        (["--disk", "/tmp"], ["/tmp", "not a regular file"]),
        (["--cpu", "no-such-cpu-model"], ["unknown CPU model"]),
    ],
    ids=[
        "mem0",
        "memneg",
        "memhuge",
        "memunit",
        "vcpu0",
        "vcpuhuge",
        "machine",
        "missing-disk",
        "missing-iso",
        "text-as-iso",
        "dir-as-disk",
        "cpu-model",
    ],
)
def test_invalid_create_flags(
    bed: Bed, vm_name: str, untouched: None, args: list[str], words: list[str]
) -> None:
    g = bed.guest
    result = run_cli(
        bed,
        "vm",
        "create",
        vm_name,
        "--kernel",
        g.kernel,
        "--initrd",
        g.initrd,
        "--memory",
        "128M",
        "--disk",
        "16M",
        *args,
    )
    assert_one_line_error(result, *words)


def test_not_a_disc_as_cdrom(
    bed: Bed, vm_name: str, vk: Client, untouched: None, tmp_path: Path
) -> None:
    zeros = tmp_path / "blank.iso"
    zeros.write_bytes(b"\0" * 1024 * 1024)
    spec = tiny_spec(bed, vm_name, cdrom=str(zeros), disks=[{"size": "16M"}])
    with pytest.raises(InvalidInput) as refused:
        vk.vms.create(parse_vm_spec(spec), start=True)
    assert refused.value.code == "invalid_cdrom" and str(zeros) in str(refused.value)


def test_missing_kernel(bed: Bed, vm_name: str, untouched: None) -> None:
    result = run_cli(bed, "vm", "create", vm_name, "--kernel", "/nonexistent/vmlinuz")
    assert_one_line_error(result, "kernel", "/nonexistent/vmlinuz", "does not exist")


def test_dangling_link_as_image(bed: Bed, vm_name: str, untouched: None, tmp_path: Path) -> None:
    dangling = tmp_path / "dangling.qcow2"
    dangling.symlink_to(tmp_path / "gone")
    result = run_cli(bed, "vm", "create", vm_name, "--disk", str(dangling))
    assert_one_line_error(result, str(dangling), "does not exist")


def test_unreadable_image(bed: Bed, vm_name: str, untouched: None) -> None:
    # write-only even for root: sysctl files check their mode for every user
    unreadable = "/proc/sys/vm/drop_caches"
    result = run_cli(
        bed, "vm", "create", vm_name, "--kernel", bed.guest.kernel, "--disk", unreadable
    )
    assert_one_line_error(result, unreadable, "cannot be read", "Permission denied")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: [unclosed\n", ["not valid YAML", "line"]),
        ("name: x\nsurprise: 1\n", ["surprise", "unknown key"]),
        ("name: x\ndisks:\n  - sizee: 1G\n", ["disks[0].sizee", "unknown key"]),
        ("- just\n- a list\n", ["mapping"]),
        ("name: x\nmemory: lots\n", ["memory", "not a size"]),
        ("name: x\ndisks:\n  - size: 1G\n    path: /x\n", ["exactly one of"]),
    ],
    ids=["yaml", "unknown-key", "nested-unknown", "not-mapping", "bad-memory", "disk-both"],
)
def test_malformed_spec_files(
    bed: Bed, untouched: None, tmp_path: Path, text: str, words: list[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert_one_line_error(run_cli(bed, "vm", "create", "-f", str(spec)), *words)


def test_spec_file_creates_and_flags_override(bed: Bed, vm_name: str, tmp_path: Path) -> None:
    g = bed.guest
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: {vm_name}\nvcpus: 1\nmemory: 128M\nkernel: {g.kernel}\n"
        f"initrd: {g.initrd}\ncmdline: console=ttyS0\ntags: [from-file]\n"
    )
    result = run_cli(bed, "vm", "create", "-f", str(spec), "--memory", "144M", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["name"] == vm_name and info["max_memory"] == 144 * 1024 * 1024
    assert info["tags"] == ["from-file"]


def test_name_taken(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"size": "16M"}])))
    files = _files(bed.pool_dir)
    result = run_cli(bed, "vm", "create", vm_name, "--kernel", bed.guest.kernel, "--disk", "16M")
    assert_one_line_error(result, vm_name, "already exists")
    assert _files(bed.pool_dir) == files


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["vm", "start", "vktest-nope"], ["no VM named 'vktest-nope'"]),
        (["vm", "shutdown", "vktest-nope"], ["no VM named"]),
        (["vm", "show", "vktest-nope"], ["no VM named"]),
        (["vm", "delete", "vktest-nope"], ["no VM named"]),
        (["vm", "show", "../etc"], ["invalid VM name"]),
    ],
)
def test_missing_vm(bed: Bed, args: list[str], words: list[str]) -> None:
    assert_one_line_error(run_cli(bed, *args), *words)


def test_wrong_states(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))
    assert_one_line_error(run_cli(bed, "vm", "shutdown", vm_name), "shut off")
    assert run_cli(bed, "vm", "start", vm_name).returncode == 0
    assert_one_line_error(run_cli(bed, "vm", "start", vm_name), "cannot start", "running")


def test_libvirtd_not_reachable(bed: Bed, tmp_path: Path) -> None:
    env_uri = f"qemu+unix:///system?socket={tmp_path}/no-such-sock"
    result = run_cli(bed, "--connect", env_uri, "vm", "list")
    assert_one_line_error(result, "cannot connect to libvirt", "libvirtd -d")


# -- rollback: every step undone, for failures real and injected ----------------------------


@pytest.mark.parametrize("fault", ["define", "set_autostart", "start"])
def test_injected_failure_rolls_back(
    bed: Bed, vm_name: str, vk: Client, untouched: None, fault: str
) -> None:
    faulty = Client(
        settings=bed.settings,
        host=FaultyHost(vk.host, {fault: BackendError("No space left on device (injected)")}),
    )
    spec = parse_vm_spec(
        tiny_spec(bed, vm_name, autostart=True, disks=[{"size": "16M"}, {"size": "16M"}])
    )
    with pytest.raises(BackendError, match="No space left"):
        faulty.vms.create(spec, start=True)
    assert not vk.host.exists(vm_name)


def test_second_disk_failure_removes_first(
    bed: Bed, vm_name: str, vk: Client, untouched: None
) -> None:
    # a volume of the second disk's name already exists: creating it fails for real
    clash = bed.pool_dir / f"{vm_name}-disk1.qcow2"
    s = bed.settings
    storage.ensure_pool(vk.host, s.storage_pool, s.storage_pool_path)
    storage.create_blank_disk(vk.host, s.storage_pool, clash.name, 1024 * 1024)
    try:
        spec = parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"size": "16M"}, {"size": "16M"}]))
        with pytest.raises(AlreadyExists):
            vk.vms.create(spec)
        assert not (bed.pool_dir / f"{vm_name}-disk0.qcow2").exists()
        assert not vk.host.exists(vm_name)
    finally:
        vk.host.storage.delete_volume_by_path(str(clash))


def test_bad_image_fails_at_start_and_rolls_back(
    bed: Bed, vm_name: str, vk: Client, untouched: None
) -> None:
    broken = bed.daemon.shared / f"{vm_name}-broken.qcow2"
    broken.write_bytes(b"QFI\xfb" + b"\xff" * 508)  # a qcow2 magic and a nonsense header
    try:
        watched = FaultyHost(vk.host, {})  # no faults: it records the calls
        client = Client(settings=bed.settings, host=watched)
        spec = parse_vm_spec(
            tiny_spec(bed, vm_name, disks=[{"size": "16M"}, {"path": str(broken)}])
        )
        with pytest.raises(VirtkitError):
            client.vms.create(spec, start=True)
        assert "define" in watched.calls and "start" in watched.calls  # QEMU refused it
        assert not vk.host.exists(vm_name)
        # through the CLI: QEMU's multi-line complaint arrives as one line
        result = run_cli(
            bed,
            "vm",
            "create",
            vm_name,
            "--kernel",
            bed.guest.kernel,
            "--disk",
            str(broken),
            "--start",
        )
        assert_one_line_error(result)
        assert not vk.host.exists(vm_name)
    finally:
        broken.unlink()


def test_declared_format_mismatch(bed: Bed, vm_name: str, vk: Client, untouched: None) -> None:
    raw = bed.daemon.shared / f"{vm_name}.raw"
    raw.write_bytes(b"\0" * 4096)
    try:
        with pytest.raises(InvalidInput, match="not a qcow2 image"):
            vk.vms.create(
                parse_vm_spec(
                    tiny_spec(bed, vm_name, disks=[{"path": str(raw), "format": "qcow2"}])
                )
            )
    finally:
        raw.unlink()


def test_name_taken_api(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))
    with pytest.raises(AlreadyExists):
        vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))


def test_relative_paths_are_resolved(bed: Bed, vm_name: str, vk: Client) -> None:
    kernel_dir = Path(bed.guest.kernel).parent
    result = run_cli(
        bed,
        "vm",
        "create",
        vm_name,
        "--kernel",
        "./vmlinuz",
        "--initrd",
        "initrd.img",
        "--json",
        cwd=kernel_dir,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["kernel"] == bed.guest.kernel and info["initrd"] == bed.guest.initrd


def test_refused_set_changes_nothing(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))
    before = vk.vms.xml(vm_name, inactive=True)
    with pytest.raises(InvalidInput, match="at least 16 MiB"):
        vk.vms.set(vm_name, vcpus=2, memory=1024)
    with pytest.raises(InvalidInput, match="more than machine type"):
        vk.vms.set(vm_name, vcpus=100000, memory=256 * 1024 * 1024)
    assert vk.vms.xml(vm_name, inactive=True) == before
