"""Reading a VM's seed for people: real seed ISOs (the builder virtkit uses), every secret
hidden, the rest shown as it is."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import yaml

from virtkit.cloudinit import CloudInit, HostKey, _iso, build_seed, hash_password, static_network
from virtkit.cloudinit.seedview import HIDDEN, describe_seed


def _public_key() -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"k" * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} me@example"


def _host_key(tmp_path: Path) -> HostKey:
    key = tmp_path / "vkseed-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return HostKey(
        "ed25519", key.read_text(), " ".join(key.with_suffix(".pub").read_text().split()[:2])
    )


CHPASSWD = "#cloud-config\nchpasswd:\n  expire: false\n  list: |\n    root:hunter2\n"


def test_nocloud_secrets_are_hidden_and_the_rest_is_shown(tmp_path: Path) -> None:
    host_key = _host_key(tmp_path)
    ci = CloudInit(user="admin", ssh_keys=[_public_key()], hostname="web1", packages=["nginx"],
                   password_hash=hash_password("s3cret-pw"), host_keys=[host_key],
                   user_data=CHPASSWD)  # fmt: skip
    iso = build_seed(ci, "web1", "i-0123456789abcdef")
    assert b"OPENSSH PRIVATE KEY" in iso and b"hunter2" in iso  # the seed carries them...
    view = describe_seed(iso, "/pool/web1-seed.iso")
    assert view.format == "nocloud" and view.source == "/pool/web1-seed.iso"
    assert view.files[0].path == "user-data"
    shown = "\n".join(f.text for f in view.files)
    # ...the view does not: neither the private key, nor the hash, nor the chpasswd list
    assert "PRIVATE KEY" not in shown and "$6$" not in shown and "hunter2" not in shown
    user_data = next(f for f in view.files if f.path == "user-data")
    assert user_data.text.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data.text)
    admin = next(u for u in config["users"] if isinstance(u, dict))
    assert admin["name"] == "admin" and admin["passwd"] == HIDDEN
    assert admin["ssh_authorized_keys"] == [_public_key()]  # public keys stay
    assert config["ssh_keys"]["ed25519_private"] == HIDDEN
    assert config["ssh_keys"]["ed25519_public"] == host_key.public
    assert config["packages"] == ["nginx"] and config["hostname"] == "web1"
    assert config["chpasswd"]["expire"] is False
    assert "users[1].passwd" in user_data.hidden and "ssh_keys.ed25519_private" in user_data.hidden
    meta = next(f for f in view.files if f.path == "meta-data")
    assert "local-hostname: web1" in meta.text and meta.hidden == []


def test_configdrive_and_a_script_with_a_key_in_it(tmp_path: Path) -> None:
    network = static_network("198.18.0.10/24", "198.18.0.1", ["198.18.0.1"], "52:54:00:00:00:01")
    script = "#!/bin/sh\ncat > /root/id <<EOF\n" + _host_key(tmp_path).private + "EOF\necho ok\n"
    ci = CloudInit(ssh_keys=[_public_key()], seed="configdrive", network_config=network,
                   user_data=script)  # fmt: skip
    view = describe_seed(build_seed(ci, "win1", "i-feed"), "/pool/win1-seed.iso")
    assert view.format == "configdrive"
    by_path = {f.path: f for f in view.files}
    assert view.files[0].path == "openstack/latest/user_data"
    text = "\n".join(f.text for f in view.files)
    assert "PRIVATE KEY" not in text and "echo ok" in text and HIDDEN in text
    assert "198.18.0.10" in by_path["openstack/latest/network_data.json"].text
    assert _public_key().split()[1] in by_path["openstack/latest/meta_data.json"].text


def test_binary_and_foreign_seeds() -> None:
    view = describe_seed(_iso("OTHER", {"blob.bin": b"\xff\xfe\x00" * 10}), "/x.iso")
    assert view.format == "unknown"
    assert view.files[0].text == "(30 bytes of binary data, not shown)"
