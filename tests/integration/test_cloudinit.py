"""cloud-init for real: a Debian 12 guest built from Debian packages (cached between runs) boots
from a template with a NoCloud seed and comes up with its host name, the user with the SSH key
and sudo, the runcmd marker on the console, and `virtkit vm ssh` runs commands in it over
user-mode networking forwarded to 127.0.0.1; the same with a ConfigDrive seed and a static
address seen from inside. Bad input is refused before anything is made."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import Bed, console_log, run_cli
from tests.integration.conftest import MARKER, PASSWORD, CloudGuests
from virtkit import Client
from virtkit.cloudinit import key_fingerprint, read_seed
from virtkit.services import storage
from virtkit.services.hostkeys import PendingHostKeys

pytestmark = pytest.mark.integration
# `template`: the debian-12 template, built once per session (tests/integration/conftest.py)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh(bed: Bed, name: str, key: Path, *command: str) -> str:
    done = run_cli(bed, "vm", "ssh", name, "-i", str(key), "--", *command, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def tamper_host_key_pins(bed: Bed, name: str, pins: list[str]) -> None:
    """Replace the VM's pinned host keys with keys of a machine that is not it."""
    other = PendingHostKeys().result()
    ns = "https://virtkit.dev/xmlns/virtkit/1"
    virsh = ["virsh", "-c", bed.settings.uri, "metadata", name, "--uri", ns]
    current = subprocess.run(virsh, capture_output=True, text=True, check=True).stdout
    for pin, fake in zip(pins, other, strict=True):
        current = current.replace(pin, fake.public)
    subprocess.run([*virsh, "--live", "--config", "--key", "vk", "--set", current], check=True,
                   capture_output=True)  # fmt: skip


def restore_metadata(bed: Bed, name: str, original: str) -> None:
    """Put virtkit's metadata back as it was (after tamper_host_key_pins)."""
    ns = "https://virtkit.dev/xmlns/virtkit/1"
    virsh = ["virsh", "-c", bed.settings.uri, "metadata", name, "--uri", ns]
    subprocess.run([*virsh, "--live", "--config", "--key", "vk", "--set", original], check=True,
                   capture_output=True)  # fmt: skip


def metadata_of(bed: Bed, name: str) -> str:
    ns = "https://virtkit.dev/xmlns/virtkit/1"
    virsh = ["virsh", "-c", bed.settings.uri, "metadata", name, "--uri", ns]
    return subprocess.run(virsh, capture_output=True, text=True, check=True).stdout


@pytest.mark.timeout(900)  # its set-up may build the image, then boots the shared guests
def test_nocloud_user_key_sudo_hostname_runcmd_and_ssh(
    bed: Bed, vk: Client, template: str, cloud_guests: CloudGuests
) -> None:
    """The NoCloud guest of the shared pair (tests/integration/conftest.py): made by a site
    file with a user, an SSH key, a password, a hostname and a runcmd."""
    vm_name, key = cloud_guests.names["web"], cloud_guests.key
    seed = vk.pools.get_volume(bed.settings.storage_pool, f"{vm_name}-seed.iso")
    cdroms = [d for d in vk.vms.get(vm_name).disks if d.device == "cdrom"]
    assert seed.format in ("raw", "iso")  # libvirt probes the ISO 9660 signature
    assert [(d.source, d.bus, d.owned) for d in cdroms] == [(seed.path, "scsi", True)]
    # the template it came from is in virtkit's metadata: vm show, vm list, the exporter's info
    origin = f"{bed.settings.storage_pool}/{template.rpartition('/')[2]}"
    assert vk.vms.get(vm_name).template == origin
    assert {v.name: v.template for v in vk.vms.list()}[vm_name] == origin
    waited = run_cli(bed, "vm", "wait", vm_name, "--for", "cloud-init", "--timeout", "240",
                     timeout=300)  # fmt: skip
    assert waited.returncode == 0, waited.stderr + console_log(bed, vm_name)[-3000:]
    assert MARKER in console_log(bed, vm_name)
    assert "DataSourceNoCloud" in console_log(bed, vm_name)
    assert run_cli(bed, "vm", "wait", vm_name, "--for", "boot", "--timeout", "60").returncode == 0
    assert run_cli(bed, "vm", "wait", vm_name, "--for", "ssh", "--timeout", "60").returncode == 0
    assert ssh(bed, vm_name, key, "hostname") == "web1"
    assert ssh(bed, vm_name, key, "id", "-un") == "admin"  # the user cloud-init made
    assert ssh(bed, vm_name, key, "sudo", "-n", "id", "-u") == "0"
    shadow = ssh(bed, vm_name, key, "sudo", "-n", "getent", "shadow", "admin")
    assert shadow.split(":")[1].startswith("$6$")  # the password, hashed
    # the guest's SSH host keys are the ones virtkit made and pinned ('vm ssh' checks them)
    pins = vk.vms.get(vm_name).ssh_host_keys
    assert [p.split()[0] for p in pins] == ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
    served = ssh(bed, vm_name, key, "sudo", "-n", "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
    assert " ".join(served.split()[:2]) == pins[0]
    shown = run_cli(bed, "vm", "show", vm_name).stdout
    assert key_fingerprint(pins[0]) in shown
    # the guest agent answers on the channel virtkit adds, and knows the user-mode NIC's address
    deadline = time.monotonic() + 60
    while vk.vms.get(vm_name).guest_agent != "connected" and time.monotonic() < deadline:
        time.sleep(1)
    assert vk.vms.get(vm_name).guest_agent == "connected"
    found = json.loads(run_cli(bed, "vm", "ip", vm_name, "--json").stdout)[vm_name]
    user_mac = vk.nics.list(vm_name)[0].mac
    assert (user_mac, "10.0.2.15", "agent") in [(a["mac"], a["ip"], a["source"]) for a in found]
    assert {a["source"] for a in found} == {"agent"}  # (and QEMU's IPv6 fec0::/64 address)
    # a guest answering with another key is refused
    original = metadata_of(bed, vm_name)
    tamper_host_key_pins(bed, vm_name, pins)
    try:
        refused = run_cli(bed, "vm", "ssh", vm_name, "-i", str(key), "--", "true", timeout=60)
        assert refused.returncode != 0 and "Host key verification failed" in refused.stderr
        assert "--no-host-key-check" in refused.stderr  # and virtkit says what to do about it
        unchecked = run_cli(bed, "vm", "ssh", vm_name, "-i", str(key), "--no-host-key-check",
                            "--", "hostname", timeout=60)  # fmt: skip
        assert unchecked.returncode == 0 and unchecked.stdout.strip() == "web1", unchecked.stderr
    finally:
        restore_metadata(bed, vm_name, original)  # the guest is shared with other tests
    assert ssh(bed, vm_name, key, "true") == ""
    # the plain password is nowhere: not in the domain, the seed, or the console
    xml = run_cli(bed, "vm", "xml", vm_name).stdout
    seed_bytes = Path(seed.path).read_bytes()
    for place in (xml, seed_bytes.decode(errors="replace"), console_log(bed, vm_name)):
        assert PASSWORD not in place
    # (the seed goes with the VM: the pair's teardown prunes it, and checks)


def test_configdrive_with_a_static_address(bed: Bed, cloud_guests: CloudGuests) -> None:
    vm_name, key = cloud_guests.names["db"], cloud_guests.key
    waited = run_cli(bed, "vm", "wait", vm_name, "--for", "ssh", "--timeout", "240", timeout=300)
    assert waited.returncode == 0, waited.stderr + console_log(bed, vm_name)[-3000:]
    assert "DataSourceConfigDrive" in ssh(bed, vm_name, key, "cat",
                                          "/run/cloud-init/status.json")  # fmt: skip
    addresses = json.loads(ssh(bed, vm_name, key, "ip", "-j", "-4", "addr", "show"))
    eth = [a for i in addresses for a in i["addr_info"] if i["ifname"] != "lo"]
    assert [(a["local"], a["prefixlen"]) for a in eth] == [("10.0.2.15", 24)]
    assert not any(a.get("dynamic") for a in eth)  # static, not a DHCP lease
    eni = ssh(bed, vm_name, key, "cat", "/etc/network/interfaces.d/50-cloud-init")
    assert "default via 10.0.2.2" in ssh(bed, vm_name, key, "ip", "route"), eni
    assert ssh(bed, vm_name, key, "hostname") == vm_name


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({"ud.yaml": "#cloud-config\npackages: [nginx\n"}, ["--user-data", "ud.yaml"],
         "not valid YAML at line"),
        ({"ud.yaml": "packages: [nginx]\n"}, ["--user-data", "ud.yaml"], "is not cloud-config"),
        ({}, ["--ssh-key", "missing.pub"], "cannot read SSH key file"),
        ({"id": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"},
         ["--ssh-key", "id"], "private key, not a public one"),
        ({}, ["--ip", "198.18.0.10/40"], "invalid --ip"),
        ({}, ["--ip", "198.18.0.10/24", "--gateway", "198.18.9.1"], "outside"),
        ({}, ["--seed", "floppy"], "floppy"),
        ({"net.yaml": "version: 7\n"}, ["--network-config", "net.yaml"], "version: 1"),
    ],
)  # fmt: skip
def test_bad_cloud_init_input_makes_nothing(
    bed: Bed, vk: Client, vm_name: str, tmp_path: Path, files: dict[str, str], args: list[str],
    message: str,
) -> None:  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = run_cli(bed, "vm", "create", vm_name, "--memory", "64M", "--user", "admin", *args,
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode in (1, 2) and message in done.stderr, done.stderr
    assert not vk.host.exists(vm_name)
    assert not list(bed.pool_dir.glob(f"{vm_name}*"))
    if "private" in message:
        assert "AAAA" not in done.stderr and "not stored" in done.stderr


def test_a_clone_gets_its_own_seed_with_a_fresh_instance_id(
    bed: Bed, vk: Client, vm_name: str, tmp_path: Path
) -> None:
    pub = tmp_path / "k.pub"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)  # fmt: skip
    made = run_cli(bed, "vm", "create", vm_name, "--memory", "64M", "--disk", "16M",
                   "--user", "admin", "--ssh-key", str(pub), "--ip", "10.0.2.15/24",
                   "--ssh-forward", str(free_port()))  # fmt: skip
    assert made.returncode == 0, made.stderr
    copy = f"{vm_name}-copy"
    try:
        cloned = run_cli(bed, "vm", "clone", vm_name, copy)
        assert cloned.returncode == 0, cloned.stderr
        seeds = {}
        for name in (vm_name, copy):
            cdrom = next(d for d in vk.vms.get(name).disks if d.device == "cdrom")
            assert cdrom.owned and cdrom.source == str(bed.pool_dir / f"{name}-seed.iso")
            _volume, files = read_seed(Path(cdrom.source).read_bytes())
            seeds[name] = yaml.safe_load(files["meta-data"])
        assert seeds[copy]["instance-id"] != seeds[vm_name]["instance-id"]
        assert seeds[copy]["local-hostname"] == copy
        # the clone's user-mode NIC: its own MAC and forwarded port; its static address is
        # matched to that MAC, not the original's
        nics = {n: vk.nics.list(n)[0] for n in (vm_name, copy)}
        assert nics[copy].mac != nics[vm_name].mac and nics[copy].source != nics[vm_name].source
        cdrom = next(d for d in vk.vms.get(copy).disks if d.device == "cdrom")
        _volume, files = read_seed(Path(cdrom.source or "").read_bytes())
        match = yaml.safe_load(files["network-config"])["ethernets"]["eth0"]["match"]
        assert match["macaddress"] == nics[copy].mac
        # each has its own SSH host keys: pinned in its metadata, the same in its seed
        pins = {n: vk.vms.get(n).ssh_host_keys for n in (vm_name, copy)}
        assert len(pins[vm_name]) == 3 and not set(pins[vm_name]) & set(pins[copy])
        for name in (vm_name, copy):
            cdrom = next(d for d in vk.vms.get(name).disks if d.device == "cdrom")
            _volume, files = read_seed(Path(cdrom.source or "").read_bytes())
            in_seed = yaml.safe_load(files["user-data"])["ssh_keys"]
            assert [in_seed[f"{t}_public"] for t in ("ed25519", "ecdsa", "rsa")] == pins[name]
            for kind, pin in zip(("ed25519", "ecdsa", "rsa"), pins[name], strict=True):
                private = tmp_path / f"{name}-{kind}"
                private.write_text(in_seed[f"{kind}_private"])
                private.chmod(0o600)
                derived = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], check=True,
                                         capture_output=True, text=True).stdout  # fmt: skip
                assert " ".join(derived.split()[:2]) == pin  # the pair in the seed is the pin's
        # `vm cloud-init` shows the clone's seed (read through libvirt), keys hidden
        shown = run_cli(bed, "vm", "cloud-init", copy)
        assert shown.returncode == 0, shown.stderr
        assert f"{copy}-seed.iso (nocloud)" in shown.stdout and "--- user-data" in shown.stdout
        assert "ed25519_private: (hidden)" in shown.stdout and pins[copy][0] in shown.stdout
        assert "PRIVATE KEY" not in shown.stdout and f"local-hostname: {copy}" in shown.stdout
    finally:
        if vk.host.exists(copy):
            vk.vms.delete(copy, force=True, remove_storage=True)
    assert not (bed.pool_dir / f"{copy}-seed.iso").exists()


def test_host_keys_left_to_the_guest(bed: Bed, vk: Client, vm_name: str, tmp_path: Path) -> None:
    """--no-host-keys, or a user-data that sets its own: nothing pinned, nothing added."""
    theirs = tmp_path / "ud.yaml"
    theirs.write_text("#cloud-config\nssh_genkeytypes: [ed25519]\n")
    cases = ((vm_name, ["--no-host-keys"]), (f"{vm_name}-b", ["--user-data", str(theirs)]))
    for name, args in cases:
        made = run_cli(bed, "vm", "create", name, "--memory", "64M", "--disk", "16M",
                       "--user", "admin", *args)  # fmt: skip
        copy = f"{name}-copy"
        try:
            assert made.returncode == 0, made.stderr
            cloned = run_cli(bed, "vm", "clone", name, copy)
            assert cloned.returncode == 0, cloned.stderr
            for each in (name, copy):  # a clone of such a VM pins and adds nothing either
                assert vk.vms.get(each).ssh_host_keys == []
                cdrom = next(d for d in vk.vms.get(each).disks if d.device == "cdrom")
                _volume, files = read_seed(Path(cdrom.source or "").read_bytes())
                user_data = yaml.safe_load(files["user-data"])
                assert "ssh_keys" not in user_data
                assert ("ssh_genkeytypes" in user_data) is (name != vm_name)
        finally:
            for each in (copy, name):
                if vk.host.exists(each):
                    vk.vms.delete(each, force=True, remove_storage=True)
    # --no-host-keys without anything for cloud-init asks for no seed at all
    bare = run_cli(bed, "vm", "create", vm_name, "--memory", "64M", "--disk", "16M",
                   "--no-host-keys")  # fmt: skip
    try:
        assert bare.returncode == 0, bare.stderr
        assert [d.device for d in vk.vms.get(vm_name).disks] == ["disk"]
    finally:
        vk.vms.delete(vm_name, force=True, remove_storage=True)


def test_a_windows_template_makes_its_own_host_keys(bed: Bed, vk: Client, vm_name: str) -> None:
    """cloudbase-init does not read ssh_keys: a VM from a template marked Windows pins none."""
    from virtkit.specs import VolumeSpec

    base = f"{vm_name}-win"
    storage.ensure_pool(vk.host, bed.settings.storage_pool, bed.pool_dir)
    vk.pools.create_volume(bed.settings.storage_pool,
                           VolumeSpec.model_validate({"name": base, "size": "16M"}))  # fmt: skip
    vk.images.set_template(bed.settings.storage_pool, base, os_name="windows-2022")
    try:
        made = run_cli(bed, "vm", "create", vm_name, "--image", base, "--memory", "64M",
                       "--user", "admin", "--seed", "configdrive")  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert vk.vms.get(vm_name).ssh_host_keys == []
        cdrom = next(d for d in vk.vms.get(vm_name).disks if d.device == "cdrom")
        _volume, files = read_seed(Path(cdrom.source or "").read_bytes())
        assert "ssh_keys" not in yaml.safe_load(files["openstack/latest/user_data"])
    finally:
        if vk.host.exists(vm_name):
            vk.vms.delete(vm_name, force=True, remove_storage=True)
        vk.pools.delete_volume(bed.settings.storage_pool, base)


def test_image_build_makes_a_template_that_boots_its_own_kernel(
    bed: Bed, vk: Client, vm_name: str, template: str
) -> None:
    """`virtkit image build` (the template fixture ran it): a template with its boot record, its
    kernel in a directory of its own build; bad input, or a name taken, makes nothing."""
    name = f"{vm_name}-built"
    images = bed.settings.cache_dir / "images"
    for args, message in ((["--suite", "Bad!"], "invalid Debian suite"),
                          (["--pool", "vktest-nosuch"], "vktest-nosuch")):  # fmt: skip
        refused = run_cli(bed, "image", "build", name, *args)  # refused before any building
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
        assert "debootstrap" not in refused.stderr
        assert not list(images.glob(f"{name}*")) and not list(bed.pool_dir.glob(f"{name}*"))
    again = run_cli(bed, "image", "build", template)
    assert again.returncode != 0 and "exists in pool" in again.stderr
    assert "debootstrap" not in again.stderr
    info = vk.images.get(bed.settings.storage_pool, template)
    assert info.template and info.os == "debian-bookworm" and info.boot is not None
    [build_dir] = images.glob(f"{template}-*")
    assert info.boot["kernel"] == str(build_dir / "vmlinuz")
    assert (build_dir / "vmlinuz").exists() and not (build_dir / "disk.qcow2").exists()
    xml = run_cli(bed, "vm", "create", vm_name, "--image", template, "--user", "admin",
                  "--print-xml").stdout  # fmt: skip
    assert f"<kernel>{build_dir / 'vmlinuz'}</kernel>" in xml
    assert "root=/dev/vda" in xml
