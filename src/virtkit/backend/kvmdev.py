"""``/dev/kvm`` on a local host: can the user QEMU runs as open it, and the fix when it cannot.

Where no udev runs (containers, chroots, minimal hosts), ``/dev/kvm`` is often
``crw------- root:root``. libvirt then takes about 40 s to report that QEMU could not open it.
These facts answer the same question in microseconds: the device's owner and mode, the user
and groups libvirt gives QEMU (the DAC security label in the host capabilities, else
``qemu.conf``), and the group and mode Debian's udev rule gives the device (``root:kvm 0660``).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from virtkit.errors import PermissionDenied

KVM_DEVICE = Path("/dev/kvm")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
UDEV_RUN_DIR = Path("/run/udev")  # present whenever udevd manages /dev
# What Debian's udev rule (50-udev-default.rules) gives the device.
KVM_GROUP = "kvm"
KVM_MODE = 0o660


@dataclass(frozen=True)
class DeviceNode:
    path: str
    uid: int
    gid: int
    mode: int  # permission bits only
    ctime: float

    @property
    def fingerprint(self) -> str:
        """Changes whenever something that decides access changes (chmod/chown bump ctime)."""
        return f"{self.uid}:{self.gid}:{self.mode:o}:{self.ctime:.6f}"

    def describe(self) -> str:
        return f"{stat.filemode(stat.S_IFCHR | self.mode)} {_user(self.uid)}:{_group(self.gid)}"


@dataclass(frozen=True)
class QemuIdentity:
    """The user and groups libvirt starts QEMU with."""

    uid: int
    gid: int
    groups: tuple[int, ...]

    @property
    def user(self) -> str:
        return _user(self.uid)

    @property
    def fingerprint(self) -> str:
        return f"{self.uid}:{self.gid}:{','.join(map(str, self.groups))}"

    def describe(self) -> str:
        names = ", ".join(_group(g) for g in self.groups) or _group(self.gid)
        return f"{self.user} (uid {self.uid}, groups {names})"


def stat_device(path: Path = KVM_DEVICE) -> DeviceNode | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    return DeviceNode(str(path), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_ctime)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _resolve_uid(spec: str) -> int | None:
    """qemu.conf's and the label's user syntax: ``+N`` is a uid, else a name (or a number)."""
    if spec.startswith("+") and spec[1:].isdigit():
        return int(spec[1:])
    try:
        return pwd.getpwnam(spec).pw_uid
    except KeyError:
        return int(spec) if spec.isdigit() else None


def _resolve_gid(spec: str) -> int | None:
    if spec.startswith("+") and spec[1:].isdigit():
        return int(spec[1:])
    try:
        return grp.getgrnam(spec).gr_gid
    except KeyError:
        return int(spec) if spec.isdigit() else None


def identity(uid: int, gid: int) -> QemuIdentity:
    """libvirt runs QEMU with the user's groups (its passwd group and every group that lists
    it, as getgrouplist gives them) plus ``gid`` (virGetGroupList)."""
    groups: set[int] = {gid}
    try:
        entry = pwd.getpwuid(uid)
        groups.update(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except KeyError:
        pass
    return QemuIdentity(uid, gid, tuple(sorted(groups)))


def identity_from_label(label: str) -> QemuIdentity | None:
    """From a DAC base label such as ``+64055:+64055``."""
    user, _, group = label.partition(":")
    uid = _resolve_uid(user)
    gid = _resolve_gid(group) if group else None
    if uid is None:
        return None
    return identity(uid, gid if gid is not None else uid)


_CONF_LINE = re.compile(r'^\s*(user|group)\s*=\s*"([^"]*)"\s*$')


def identity_from_qemu_conf(path: Path = QEMU_CONF) -> QemuIdentity | None:
    """From ``user``/``group`` in qemu.conf; None when it does not say (compile-time default)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    values: dict[str, str] = {}
    for line in lines:
        match = _CONF_LINE.match(line)
        if match:
            values[match.group(1)] = match.group(2)
    if "user" not in values:
        return None
    uid = _resolve_uid(values["user"])
    if uid is None:
        return None
    gid = _resolve_gid(values["group"]) if "group" in values else None
    if gid is None:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
    return identity(uid, gid)


def can_open(node: DeviceNode, who: QemuIdentity) -> bool:
    """Whether ``who`` may open the node read-write (classic DAC; root always may)."""
    if who.uid == 0:
        return True
    if node.uid == who.uid:
        return node.mode & 0o600 == 0o600
    if node.gid in who.groups:
        return node.mode & 0o060 == 0o060
    return node.mode & 0o006 == 0o006


def permission_fix(node: DeviceNode, who: QemuIdentity) -> str:
    """The commands that give the device the group and mode Debian's udev rule gives it."""
    steps = []
    try:
        kvm_gid: int | None = grp.getgrnam(KVM_GROUP).gr_gid
    except KeyError:
        kvm_gid = None
        steps.append(f"groupadd --system {KVM_GROUP}")
    if kvm_gid is None or node.gid != kvm_gid:
        steps.append(f"chgrp {KVM_GROUP} {node.path}")
    if node.mode & 0o060 != 0o060:
        steps.append(f"chmod 0660 {node.path}")
    if kvm_gid is None or kvm_gid not in who.groups:
        steps.append(f"usermod -aG {KVM_GROUP} {who.user} (then restart libvirtd)")
    return (
        " && ".join(steps)
        + f" — the {KVM_GROUP} group and mode 0660 that Debian's udev rule gives {node.path}"
        + " (`virtkit host fix-kvm` does it where no udev manages /dev)"
    )


@dataclass(frozen=True)
class FixResult:
    changed: bool
    message: str


def udev_manages(udev_dir: Path = UDEV_RUN_DIR) -> bool:
    return udev_dir.is_dir()


def apply_udev_default(
    path: Path = KVM_DEVICE, *, udev_dir: Path = UDEV_RUN_DIR, group: str = KVM_GROUP
) -> FixResult:
    """Give the device ``root:kvm 0660``, as Debian's udev rule does, where no udev runs.

    A device that udev manages is left alone: udev would undo the change, and its own rule
    is the place to fix it.
    """
    node = stat_device(path)
    if node is None:
        return FixResult(False, f"{path} does not exist: the kvm module is not loaded")
    if udev_manages(udev_dir):
        return FixResult(
            False,
            f"{path} is managed by udev ({udev_dir} exists): left as it is ({node.describe()})",
        )
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return FixResult(False, f"there is no '{group}' group: {path} left as it is")
    if node.gid == gid and node.mode == KVM_MODE:
        return FixResult(False, f"{path} is already {node.describe()}")
    before = node.describe()
    try:
        os.chown(path, -1, gid)
        os.chmod(path, KVM_MODE)
    except PermissionError:
        raise PermissionDenied(f"changing {path} needs root", code="not_root") from None
    after = stat_device(path)
    return FixResult(
        True,
        f"changed {path} from {before} to {after.describe() if after else '?'} "
        "(what Debian's udev rule sets; no udev manages /dev here)",
    )
