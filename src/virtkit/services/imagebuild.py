"""Build a Debian cloud image with cloud-init from Debian packages (``virtkit image build``).

debootstrap (minbase) with the kernel, systemd, cloud-init, OpenSSH and sudo, into an ext4
filesystem without a partition table (``mkfs.ext4 -d``), compressed to qcow2, plus the kernel and
initrd beside it: VMs boot it by direct kernel boot with ``root=/dev/vda``. The mirror is the
host's own (from its apt sources), never one written into the code. About 1.5 min here.
Vendor cloud images (with their own boot loader) are imported with ``virtkit image import``;
both end as templates and go the same way into VMs.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtkit.errors import InvalidInput, NotFound, PermissionDenied, VirtkitError

log = logging.getLogger(__name__)

PACKAGES = (
    "linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "udev", "dbus", "cloud-init",
    "python3-cffi-backend", "openssh-server", "ifupdown", "isc-dhcp-client", "iproute2",
    "netbase", "kmod", "sudo", "e2fsprogs",
    "net-tools",  # cloud-init's ifupdown renderer adds routes with `route`
    "qemu-guest-agent",  # addresses, clean shutdown, filesystem freeze (virtkit adds its channel)
)  # fmt: skip
CLOUD_CFG = """\
# written by virtkit image build
datasource_list: [ NoCloud, ConfigDrive, None ]
locale: C.UTF-8
"""
CMDLINE = "root=/dev/vda rw console=ttyS0"


def recipe_id(suite: str = "bookworm") -> str:
    """A short digest of what goes into an image: a cache of built images keys on it."""
    import hashlib

    recipe = "\n".join([suite, *PACKAGES, CLOUD_CFG, CMDLINE])
    return hashlib.sha256(recipe.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class BuiltImage:
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str = CMDLINE


def host_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror, from its apt sources (deb822 or one-line format)."""
    candidates: list[str] = []
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        text = path.read_text(errors="replace")
        for block in text.split("\n\n"):
            fields = dict(
                (k.strip(), v.strip()) for k, _, v in
                (line.partition(":") for line in block.splitlines() if ":" in line
                 and not line.startswith("#"))
            )  # fmt: skip
            if "Enabled" in fields and fields["Enabled"].lower() == "no":
                continue
            suites = fields.get("Suites", "").split()
            if any(s.endswith("-security") for s in suites):
                continue
            candidates += fields.get("URIs", "").split()
    one_line = etc / "sources.list"
    if one_line.exists():
        for line in one_line.read_text(errors="replace").splitlines():
            match = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and not match.group(2).endswith("-security"):
                candidates.append(match.group(1))
    for uri in candidates:
        if uri.startswith(("http://", "https://", "file:")):
            return uri
    raise NotFound(
        f"no Debian mirror in the host's apt sources ({etc}); give one with --mirror",
        code="no_mirror",
    )


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise VirtkitError(f"{what} failed: {' / '.join(tail)}", code="image_build_failed")


SIZE_GIB_MAX = 1024
_MIRROR = re.compile(r"(?:https?|file)://[!-~]+")  # printable ASCII: never read as an option


def check_recipe(*, suite: str = "bookworm", mirror: str | None = None, size_gib: int = 2) -> None:
    """What a build is asked for, checked before it starts: a Debian suite name, a mirror URL
    (http, https or file), a disk size."""
    if not re.fullmatch(r"[a-z]+", suite):
        raise InvalidInput(f"invalid Debian suite {suite!r}", code="invalid_suite")
    if mirror is not None and not _MIRROR.fullmatch(mirror):
        raise InvalidInput(
            f"the mirror is an http://, https:// or file:// URL, not {mirror!r}",
            code="invalid_mirror",
        )
    if not 1 <= size_gib <= SIZE_GIB_MAX:
        raise InvalidInput(
            f"the image's disk is 1 to {SIZE_GIB_MAX} GiB, not {size_gib}", code="invalid_size"
        )


def check_tools() -> None:
    """What a build needs of this machine: root, debootstrap, mkfs.ext4 and qemu-img."""
    if os.geteuid() != 0:
        raise PermissionDenied("building an image needs root (debootstrap)", code="not_root")
    for tool in ("debootstrap", "mkfs.ext4", "qemu-img"):
        if shutil.which(tool) is None:
            raise NotFound(
                f"{tool} is not installed (scripts/install-deps.sh)", code="tool_missing"
            )


def build_debian(
    target: Path,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
    size_gib: int = 2,
    progress: Callable[[str], None] | None = None,
) -> BuiltImage:
    """Build into directory ``target`` (disk.qcow2, vmlinuz, initrd.img); nothing is left
    behind on failure. Needs root, debootstrap, mkfs.ext4 and qemu-img."""
    say = progress or (lambda _msg: None)
    check_recipe(suite=suite, mirror=mirror, size_gib=size_gib)
    check_tools()
    if target.exists():
        raise InvalidInput(f"{target} already exists", code="path_exists")
    mirror = mirror or host_mirror()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        rootfs = work / "rootfs"
        say(f"debootstrap {suite} from {mirror}")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite,
              str(rootfs), mirror], "debootstrap")  # fmt: skip
        say("configuring the tree for cloud-init")
        (rootfs / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
        (rootfs / "etc/default/locale").write_text("LANG=C.UTF-8\n")
        (rootfs / "etc/cloud/cloud.cfg.d/99-virtkit.cfg").write_text(CLOUD_CFG)
        (rootfs / "etc/machine-id").write_text("")
        (rootfs / "etc/hostname").unlink(missing_ok=True)
        for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
        initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise VirtkitError("the tree has no kernel or initrd", code="image_build_failed")
        out = work / "out"
        out.mkdir()
        shutil.copyfile(kernels[-1], out / "vmlinuz")
        shutil.copyfile(initrds[-1], out / "initrd.img")
        say("making the ext4 filesystem")
        raw = work / "root.raw"
        with open(raw, "wb") as f:
            f.truncate(size_gib << 30)
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(raw)], "mkfs.ext4")
        say("compressing to qcow2")
        _run(["qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compat=1.1", str(raw),
              str(out / "disk.qcow2")], "qemu-img convert")  # fmt: skip
        for name in ("vmlinuz", "initrd.img", "disk.qcow2"):
            (out / name).chmod(0o644)
        out.chmod(0o755)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltImage(target / "disk.qcow2", target / "vmlinuz", target / "initrd.img")
