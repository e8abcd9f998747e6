#!/usr/bin/env python3
"""From `virtkit vm create` to SSH-ready, against `virt-install --import --cloud-init`.

The same Debian 12 cloud-init image (built by virtkit's image builder, cached in .cache/tests),
the same user-data (a user with an SSH key and sudo; virtkit's also carries the SSH host keys it
makes for every guest), 512 MiB, direct kernel boot, user-mode
networking with SSH forwarded to 127.0.0.1, under a private libvirtd. Each run: start the clock,
run the command, poll 127.0.0.1:PORT until the guest's SSH server sends its banner, stop the
clock, then destroy and remove the VM. Runs alternate (neither always first); medians of
``--runs`` (3). virtkit's once-per-host KVM check is made before the timed runs.

virt-install runs in the private daemon's mount namespace (it writes its seed ISO into
/var/lib/libvirt/boot, which is the daemon's own there). Its seed goes on a CD-ROM whose bus
it picks (SATA on q35, which Debian's cloud kernel cannot see), so both run on the i440fx
machine (``pc``), where its CD-ROM is IDE; virtkit puts its seed on virtio-SCSI either way.
Needs root and virtinst (WITH_BENCH=1 make deps).
Usage: ``.venv/bin/python bench/cloudinit.py [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import CACHE
from tests.testbed.libvirtd import PrivateLibvirtd

from virtkit import Client, Settings
from virtkit.cloudinit import CloudInit, render_user_data
from virtkit.services import storage
from virtkit.services.imagebuild import CMDLINE, build_debian, recipe_id

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
TEMPLATE = "vkbench-debian12"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh_ready(port: int, deadline: float) -> float:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.settimeout(5)
                if sock.recv(64).startswith(b"SSH-"):
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"no SSH on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    image_dir = CACHE / f"debian-12-{recipe_id()}"
    if not (image_dir / "disk.qcow2").exists():
        build_debian(image_dir, progress=print)
    work = Path(tempfile.mkdtemp(prefix="vkbench-ci-"))
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (work / "id_ed25519.pub").read_text().strip()
    daemon = PrivateLibvirtd(name="vkbench")
    shared = daemon.shared
    (shared / "logs").mkdir(parents=True, exist_ok=True)
    settings = Settings(uri=daemon.uri, cache_dir=shared / "cache", storage_pool="vkbench-pool",
                        storage_pool_path=shared / "images", console_log_dir=shared / "logs",
                        kvm_probe_timeout=8.0)  # fmt: skip
    env = {"VIRTKIT_URI": daemon.uri, "VIRTKIT_CONFIG": "/nonexistent",
           "VIRTKIT_CACHE_DIR": str(settings.cache_dir), "VIRTKIT_STORAGE_POOL": "vkbench-pool",
           "VIRTKIT_STORAGE_POOL_PATH": str(settings.storage_pool_path),
           "VIRTKIT_CONSOLE_LOG_DIR": str(settings.console_log_dir),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # fmt: skip
    times: dict[str, list[float]] = {"virtkit": [], "virt-install": []}
    daemon.start()
    try:
        with Client(settings=settings) as vk:
            storage.ensure_pool(vk.host, "vkbench-pool", settings.storage_pool_path)
            vk.images.import_image(str(image_dir / "disk.qcow2"), "vkbench-pool", TEMPLATE)
            vk.images.set_template("vkbench-pool", TEMPLATE, os_name="debian-12")
            kernel, initrd = str(image_dir / "vmlinuz"), str(image_dir / "initrd.img")
            vk.images.set_boot("vkbench-pool", TEMPLATE, kernel, initrd, CMDLINE)
            template_path = vk.images.get("vkbench-pool", TEMPLATE).path
            # virtkit checks once per host whether KVM really works and caches the verdict (a
            # real host pays it once, ever): take it here, not in the first timed run
            subprocess.run([VIRTKIT, "host", "info"], env=env, check=True, capture_output=True)
            for run in range(args.runs):
                order = ("virtkit", "virt-install")
                for method in order if run % 2 == 0 else order[::-1]:  # neither always first
                    name, port = f"vkbench-ci-{method[:5]}{run}", free_port()
                    started = time.monotonic()
                    if method == "virtkit":
                        made = subprocess.run(
                            [VIRTKIT, "vm", "create", name, "--image", TEMPLATE, "--machine", "pc",
                             "--memory", "512M", "--user", "admin", "--ssh-key",
                             str(key) + ".pub", "--ssh-forward", str(port), "--start"],
                            env=env, check=False, capture_output=True, text=True,
                        )  # fmt: skip
                        if made.returncode != 0:
                            sys.exit(f"virtkit failed: {made.stderr.strip()}")
                    else:
                        ci = CloudInit(user="admin", ssh_keys=[pub])
                        (work / "user-data").write_text(render_user_data(ci, name))
                        (work / "meta-data").write_text(
                            f"instance-id: i-{name}\nlocal-hostname: {name}\n"
                        )
                        overlay = settings.storage_pool_path / f"{name}.qcow2"
                        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                                        "-b", template_path, str(overlay)], check=True)  # fmt: skip
                        # in the private daemon's mount namespace: virt-install writes its seed
                        # into /var/lib/libvirt/boot, which is the daemon's own there
                        assert daemon.proc is not None
                        ns = f"--mount=/proc/{daemon.proc.pid}/ns/mnt"
                        done = subprocess.run(
                            ["nsenter", ns, "virt-install", "--connect", daemon.uri, "--import",
                             "--name", name,
                             "--memory", "512", "--vcpus", "1", "--machine", "pc",
                             "--virt-type", "qemu", "--osinfo", "detect=on,require=off",
                             "--disk", f"path={overlay},bus=virtio",
                             "--boot", f"kernel={image_dir / 'vmlinuz'},initrd="
                             f"{image_dir / 'initrd.img'},kernel_args=root=/dev/vda rw "
                             "console=ttyS0",
                             "--cloud-init", f"user-data={work / 'user-data'},meta-data="
                             f"{work / 'meta-data'}",
                             "--network", "none", "--graphics", "none", "--noautoconsole",
                             f"--qemu-commandline=-netdev user,id=vk0,restrict=on,hostfwd=tcp:"
                             f"127.0.0.1:{port}-:22 -device virtio-net-pci,netdev=vk0,bus=pci.0,"
                             "addr=0x10"],
                            check=False, capture_output=True, text=True,
                        )  # fmt: skip
                        if done.returncode != 0:
                            sys.exit(f"virt-install failed: {done.stderr.strip()}")
                    ready = ssh_ready(port, started + 300)
                    times[method].append(ready - started)
                    print(f"run {run + 1} {method:12} SSH-ready in {ready - started:6.1f} s",
                          flush=True)  # fmt: skip
                    if method == "virtkit":
                        vk.vms.delete(name, force=True, remove_storage=True)
                    else:
                        subprocess.run(["virsh", "-c", daemon.uri, "destroy", name],
                                       capture_output=True, check=False)  # fmt: skip
                        subprocess.run(["virsh", "-c", daemon.uri, "undefine", name],
                                       capture_output=True, check=False)  # fmt: skip
                        (settings.storage_pool_path / f"{name}.qcow2").unlink(missing_ok=True)
            vk.pools.delete_volume("vkbench-pool", TEMPLATE)
    finally:
        daemon.stop()
        daemon.cleanup()
    medians = {m: statistics.median(t) for m, t in times.items()}
    ratio = medians["virtkit"] / medians["virt-install"]
    for method, value in medians.items():
        print(f"{method:12} median {value:6.1f} s ({', '.join(f'{t:.1f}' for t in times[method])})")
    print(f"virtkit / virt-install: {ratio:.2f} (goal: not slower, <= 1.0: "
          f"{'met' if ratio <= 1.0 else 'MISSED'})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"times_s": times, "medians_s": medians, "ratio": ratio}))


if __name__ == "__main__":
    main()
