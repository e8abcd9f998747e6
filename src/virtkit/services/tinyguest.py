"""The tiny guest: a host kernel plus a busybox initramfs that boots in seconds, even under TCG.

Used by ``make run`` for the demo VM, by the integration tests and by the benchmarks. The guest
prints :data:`BOOT_MARKER` on its serial console when booted, runs a shell on the console, and
powers off cleanly when the ACPI power button is pressed (so graceful shutdown and ACPI reboot
can be tested for real). Built from Debian's ``linux-image-cloud-amd64`` and ``busybox-static``;
the initramfs is written in Python (cpio "newc"), so no cpio tool is needed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import random
import re
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from virtkit.backend.capabilities import find_local_kernel
from virtkit.errors import NotFound

BOOT_MARKER = "VIRTKIT-TINY-BOOTED"
POWEROFF_MARKER = "VIRTKIT-TINY-POWEROFF"
CMDLINE = "console=ttyS0 quiet"
# Loaded in this order (dependencies first): the ACPI power button, and virtio-blk so the guest
# sees its disks (and hot-plugged ones).
MODULES = (
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
)
BLOCK_MARKER = "VIRTKIT-BLOCK:"
VDA_MARKER = "VIRTKIT-VDA:"
FILL_MARKER = "VIRTKIT-FILLED:"
DIRTY_MARKER = "VIRTKIT-DIRTYING:"
NET_MARKER = "VIRTKIT-NET:"  # "VIRTKIT-NET: [eth0:up eth1:down]" whenever NICs or links change
IP_MARKER = "VIRTKIT-IP:"  # "VIRTKIT-IP: eth0 198.18.1.23/24" when DHCP gives an address

# busybox udhcpc runs this on every DHCP event (given with -s: builds differ in their default)
UDHCPC_SCRIPT = f"""#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${{router%% *}}" dev "$interface"
    echo "{IP_MARKER} $interface $ip/$mask" > /dev/console ;;
esac
"""
# 1 MiB of fixed pseudo-random bytes in the initramfs; "virtkit.fill=N" on the kernel command line
# fills a tmpfs with N MiB made of it, each MiB rotated by a different byte count, so that every
# page differs from every other within a guest while every guest with the same N holds the same
# pages (for KSM tests and benchmarks).
FILL_SEED = 0x6B736D

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
hostname tiny
# The first bytes of the first disk, and "virtkit.write=TEXT" writes TEXT at its 4 KiB offset.
if [ -b /dev/vda ]; then
  echo "{VDA_MARKER} $(head -c 64 /dev/vda | tr -cd '[:alnum:]-_.')"
  for arg in $(cat /proc/cmdline); do
    case "$arg" in
      virtkit.write=*)
        echo "${{arg#virtkit.write=}}" | dd of=/dev/vda bs=4096 seek=1 conv=notrunc 2>/dev/null
        sync ;;
    esac
  done
fi
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    virtkit.fill=*)
      n=${{arg#virtkit.fill=}}; mkdir -p /fill; mount -t tmpfs -o size=$((n + 1))m tmpfs /fill
      i=1
      while [ "$i" -le "$n" ]; do
        k=$((i * 97 + 1)); tail -c +$((k + 1)) /fill.bin; head -c $k /fill.bin; i=$((i + 1))
      done > /fill/data
      echo "{FILL_MARKER} $n MiB" ;;
  esac
done
echo "{BOOT_MARKER} uptime=$(cut -d' ' -f1 /proc/uptime)"
# Block devices at boot, and again whenever one comes or goes (hot-plug); the same for NICs
# and their links. Every new NIC, and every link that comes back up, asks for an address by DHCP.
ip link set lo up
# The watchers below spawn no process while nothing changes (every fork costs under TCG, and
# many idle guests add up): shell builtins only, and a read that times out on a FIFO nobody
# writes to instead of sleep.
mkfifo /tmp/tick
(
  exec 3<>/tmp/tick
  known="-"
  nics="-"
  while true; do
    now=""
    for b in /sys/block/*; do
      n=${{b##*/}}
      case "$n" in loop*|ram*|"*") ;; *) now="$now $n" ;; esac
    done
    now=${{now# }}
    if [ "$now" != "$known" ]; then echo "{BLOCK_MARKER} [$now]"; known="$now"; fi
    net=""
    for dev in /sys/class/net/eth*; do
      [ -e "$dev" ] || continue
      n=${{dev##*/}}
      eval "prev=\\${{link_$n:-new}}"
      if [ "$prev" = new ]; then ip link set "$n" up; fi
      c=0; read c < "$dev/carrier" 2>/dev/null
      state=down; [ "$c" = 1 ] && state=up
      # a new NIC, or a link that came back up: ask for an address (again)
      if [ "$state" = up ] && [ "$prev" != up ]; then
        udhcpc -i "$n" -s /usr/share/udhcpc/default.script -q -t 20 -T 1 -A 1 >/dev/console 2>&1 &
      fi
      eval "link_$n=$state"
      net="$net $n:$state"
    done
    net=${{net# }}
    if [ -n "$net" ] && [ "$net" != "$nics" ]; then echo "{NET_MARKER} [$net]"; nics="$net"; fi
    read -t 0.5 x <&3
  done
) &
# The ACPI power button: the kernel counts fixed power-button events here.
# "virtkit.ignore_acpi" on the kernel command line makes a guest that ignores it (for tests).
grep -q virtkit.ignore_acpi /proc/cmdline || (
  exec 3<>/tmp/tick
  while true; do
    read -t 0.2 x <&3
    read n rest < /sys/firmware/acpi/interrupts/ff_pwr_btn
    if [ "$n" != 0 ]; then echo "{POWEROFF_MARKER}"; sync; poweroff -f; fi
  done
) &
# "virtkit.tick": a counter on the console every 100 ms (migration tests: it goes on, no gap)
grep -q virtkit.tick /proc/cmdline && (
  exec 3<>/tmp/tick
  i=0
  while true; do echo "TICK $i"; i=$((i + 1)); read -t 0.1 x <&3; done
) &
# "virtkit.dirty=N": rewrite N MiB of memory (not zeros, which migrate for free) over and over
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    virtkit.dirty=*)
      n=${{arg#virtkit.dirty=}}; mkdir -p /dirty
      mount -t tmpfs -o size=$((2 * n + 1))m tmpfs /dirty
      dd if=/dev/urandom of=/dirty/src bs=1M count=$n 2>/dev/null
      echo "{DIRTY_MARKER} $n MiB"
      (while true; do cat /dirty/src > /dirty/d; done) & ;;
  esac
done
while true; do setsid cttyhack sh; done
"""


@dataclass(frozen=True)
class TinyGuest:
    kernel: str
    initrd: str
    cmdline: str = CMDLINE
    boot_marker: str = BOOT_MARKER

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def find_kernel() -> str:
    """Debian's cloud kernel from /boot or virtkit's cache (any kernel if there is none)."""
    kernel = find_local_kernel()
    if kernel is None:
        raise NotFound(
            "no kernel found for the tiny guest: run scripts/install-deps.sh "
            "(it unpacks linux-image-cloud-amd64 into /var/cache/virtkit/kernel)",
            code="tiny_guest_kernel_missing",
        )
    return kernel


def find_busybox() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            with open(path, "rb") as f:
                head = f.read(8192)
            if b"ld-linux" not in head:  # a dynamic binary names its loader near the start
                return path
    raise NotFound("no static busybox: install busybox-static", code="tiny_guest_busybox_missing")


def _module_bytes(kernel: str, release: str, relative: str) -> bytes | None:
    # /boot/vmlinuz-R has its modules in /lib/modules/R; an unpacked package, beside its boot/.
    base = Path(kernel).resolve().parent.parent / "lib" / "modules" / release / relative
    for candidate, opener in ((base, None), (Path(str(base) + ".xz"), lzma.decompress)):
        if candidate.exists():
            data = candidate.read_bytes()
            return opener(data) if opener else data
    return None


class _Cpio:
    """A minimal cpio "newc" writer, which is what the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(
            f"{v:08x}" for v in (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        )
        self.ino += 1
        self.buf.write(header.encode() + encoded)
        self.buf.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(busybox: bytes, modules: dict[str, bytes]) -> bytes:
    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "tmp"):
        archive.add(directory, stat.S_IFDIR | 0o755)
    archive.add("bin/busybox", stat.S_IFREG | 0o755, busybox)
    archive.add("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode())
    archive.add("fill.bin", stat.S_IFREG | 0o644, random.Random(FILL_SEED).randbytes(1 << 20))
    for directory in ("usr", "usr/share", "usr/share/udhcpc"):
        archive.add(directory, stat.S_IFDIR | 0o755)
    archive.add("usr/share/udhcpc/default.script", stat.S_IFREG | 0o755, UDHCPC_SCRIPT.encode())
    for name, data in modules.items():
        archive.add(f"lib/modules/{name}", stat.S_IFREG | 0o644, data)
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


def build_tiny_guest(cache_dir: Path, kernel: str | None = None) -> TinyGuest:
    """Build (or reuse from ``cache_dir``) the tiny guest's kernel and initramfs."""
    kernel = kernel or find_kernel()
    busybox_path = find_busybox()
    match = re.search(r"vmlinuz-(.+)$", kernel)
    release = match.group(1) if match else os.uname().release
    # numbered, so that init's glob loads them in MODULES' order
    modules = {
        f"{i:02d}-{os.path.basename(m)}": data
        for i, m in enumerate(MODULES)
        if (data := _module_bytes(kernel, release, m)) is not None
    }
    kernel_stat = os.stat(kernel)
    key = hashlib.sha256(
        json.dumps(
            [
                kernel,
                kernel_stat.st_size,
                kernel_stat.st_mtime,
                busybox_path,
                os.stat(busybox_path).st_size,
                INIT_SCRIPT,
                UDHCPC_SCRIPT,
                sorted(modules),
            ]
        ).encode()
    ).hexdigest()[:16]
    target = cache_dir / "tiny-guest" / key
    guest = TinyGuest(kernel=str(target / "vmlinuz"), initrd=str(target / "initrd.img"))
    if Path(guest.kernel).exists() and Path(guest.initrd).exists():
        return guest
    staging = target.with_name(key + f".tmp{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    # QEMU may run as an unprivileged user (libvirt-qemu): everything must be world-readable.
    for directory in (cache_dir, cache_dir / "tiny-guest", staging):
        directory.chmod(0o755)
    shutil.copyfile(kernel, staging / "vmlinuz")
    initrd = build_initramfs(Path(busybox_path).read_bytes(), modules)
    (staging / "initrd.img").write_bytes(initrd)
    for name in ("vmlinuz", "initrd.img"):
        (staging / name).chmod(0o644)
    if target.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return guest
