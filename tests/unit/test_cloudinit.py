"""cloud-init seeds and user-data: ISO contents byte by byte, the merge rule, every refusal."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from virtkit.cloudinit import (
    CloudInit,
    HostKey,
    _iso,
    build_seed,
    check_public_key,
    hash_password,
    host_keys_config,
    key_fingerprint,
    merge,
    parse_network_config,
    parse_user_data,
    read_public_key,
    read_seed,
    render_user_data,
    reseed,
    sets_host_keys,
    static_network,
)
from virtkit.errors import InvalidInput, VirtkitError
from virtkit.services.hostkeys import PendingHostKeys


def _key(kind: str = "ssh-ed25519") -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + b"\x00\x00\x00\x20" + b"k" * 32
    return f"{kind} {base64.b64encode(blob).decode()} me@example"


KEY = _key()


def _volume_id(iso: bytes) -> str:
    # the primary volume descriptor is sector 16; its volume identifier is at byte 40, 32 bytes
    assert iso[0x8001:0x8006] == b"CD001"
    return iso[0x8000 + 40 : 0x8000 + 72].decode().strip()


def test_nocloud_seed_bytes_and_files() -> None:
    ci = CloudInit(user="admin", ssh_keys=[KEY], hostname="web1", packages=["nginx"],
                   runcmd=["touch /srv/ready"], password_hash=hash_password("s3cret"))  # fmt: skip
    iso = build_seed(ci, "web1", "i-0123456789abcdef")
    assert _volume_id(iso) == "cidata"
    volume, files = read_seed(iso)
    assert volume == "cidata" and sorted(files) == ["meta-data", "user-data"]
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": "i-0123456789abcdef", "local-hostname": "web1"}
    user_data = files["user-data"].decode()
    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    admin = config["users"][1]
    assert config["users"][0] == "default" and admin["name"] == "admin"
    assert admin["ssh_authorized_keys"] == [KEY] and admin["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert admin["passwd"].startswith("$6$") and "s3cret" not in user_data
    assert config["packages"] == ["nginx"] and config["runcmd"] == ["touch /srv/ready"]
    assert config["hostname"] == "web1" and config["ssh_pwauth"] is True
    # the files are plain in the image too (what a guest's mount shows, by Rock Ridge name)
    assert b"local-hostname: web1" in iso


def test_configdrive_seed_with_static_network() -> None:
    network = static_network("198.18.0.10/24", "198.18.0.1", ["198.18.0.1"], "52:54:00:00:00:01")
    ci = CloudInit(user="admin", ssh_keys=[KEY], seed="configdrive", network_config=network)
    iso = build_seed(ci, "win1", "i-feedfacefeedface")
    assert _volume_id(iso) == "config-2"
    _volume, files = read_seed(iso)
    assert sorted(files) == ["openstack/latest/meta_data.json",
                             "openstack/latest/network_data.json",
                             "openstack/latest/user_data"]  # fmt: skip
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == "i-feedfacefeedface" and meta["hostname"] == "win1"
    assert meta["public_keys"] == {"key0": KEY}
    net = json.loads(files["openstack/latest/network_data.json"])
    assert net["links"] == [{"id": "eth0", "type": "phy",
                             "ethernet_mac_address": "52:54:00:00:00:01"}]  # fmt: skip
    assert net["networks"][0]["ip_address"] == "198.18.0.10"
    assert net["networks"][0]["netmask"] == "255.255.255.0"
    assert net["networks"][0]["routes"][0]["gateway"] == "198.18.0.1"
    assert net["services"] == [{"type": "dns", "address": "198.18.0.1"}]


def test_the_iso_mounts_as_linux_sees_it(tmp_path: Path) -> None:
    """isoinfo (genisoimage) lists the Rock Ridge names the guest's mount shows."""
    iso = tmp_path / "seed.iso"
    iso.write_bytes(build_seed(CloudInit(), "vm", "i-1"))
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True,
                             text=True, check=False)  # fmt: skip
    if listing.returncode != 0:
        pytest.skip("isoinfo is not installed")
    assert sorted(listing.stdout.split()) == ["/meta-data", "/user-data"]


def test_reseed_gives_a_clone_a_fresh_instance_id() -> None:
    for seed in ("nocloud", "configdrive"):
        iso = build_seed(CloudInit(seed=seed), "src", "i-aaaa")
        again = reseed(iso, "copy", "i-bbbb")
        volume, files = read_seed(again)
        if volume == "cidata":
            meta = yaml.safe_load(files["meta-data"])
            assert meta == {"instance-id": "i-bbbb", "local-hostname": "copy"}
            assert yaml.safe_load(files["user-data"])["hostname"] == "copy"
        else:
            meta = json.loads(files["openstack/latest/meta_data.json"])
            assert (meta["uuid"], meta["hostname"]) == ("i-bbbb", "copy")


def test_reseed_rematches_static_addressing_to_the_clones_nic() -> None:
    net = static_network("198.18.0.10/24", None, [], "52:54:00:00:00:01")
    nocloud = build_seed(CloudInit(network_config=net), "src", "i-1")
    _v, files = read_seed(reseed(nocloud, "copy", "i-2", mac="52:54:00:00:00:99"))
    eth = yaml.safe_load(files["network-config"])["ethernets"]["eth0"]
    assert eth["match"]["macaddress"] == "52:54:00:00:00:99"
    drive = build_seed(CloudInit(network_config=net, seed="configdrive"), "src", "i-1")
    _v, files = read_seed(reseed(drive, "copy", "i-2", mac="52:54:00:00:00:99"))
    links = json.loads(files["openstack/latest/network_data.json"])["links"]
    assert links[0]["ethernet_mac_address"] == "52:54:00:00:00:99"
    assert yaml.safe_load(files["openstack/latest/user_data"])["hostname"] == "copy"


def test_merge_rule_flags_win_for_values_lists_are_joined() -> None:
    base = {"hostname": "fromfile", "packages": ["git"], "users": ["default", {"name": "ops"}],
            "timezone": "UTC"}  # fmt: skip
    flags = {"hostname": "web1", "packages": ["nginx"], "users": ["default", {"name": "admin"}]}
    merged = merge(base, flags)
    assert merged["hostname"] == "web1" and merged["timezone"] == "UTC"
    assert merged["packages"] == ["git", "nginx"]
    assert merged["users"] == ["default", {"name": "ops"}, {"name": "admin"}]
    ci = CloudInit(user="admin", packages=["nginx"],
                   user_data="#cloud-config\npackages: [git]\nhostname: x\n")  # fmt: skip
    rendered = yaml.safe_load(render_user_data(ci, "web1"))
    assert rendered["packages"] == ["git", "nginx"] and rendered["hostname"] == "web1"


def test_a_script_user_data_goes_beside_the_flags_as_multipart() -> None:
    ci = CloudInit(user="admin", user_data="#!/bin/sh\necho hi > /tmp/hi\n")
    out = render_user_data(ci, "vm")
    assert "multipart/mixed" in out and "text/cloud-config" in out
    assert "text/x-shellscript" in out and "echo hi" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#cloud-config\npackages: [nginx\n", "not valid YAML at line"),
        ("packages: [nginx]\n", "is not cloud-config"),
        ("#cloud-config\n- a\n- b\n", "mapping of keys"),
        ("#cloud-config\npackages: nginx\n", "packages must be a list"),
        ("#cloud-config\nhostname: [a]\n", "hostname must be a string"),
        ("#cloud-config\nusers: [{groups: x}]\n", "users entries"),
        ("#cloud-config\nruncmd: [{a: 1}]\n", "runcmd entries"),
        ("#cloud-config\nwrite_files: [{content: x}]\n", "write_files entries"),
        ("#cloud-config\nssh_authorized_keys: [1]\n", "ssh_authorized_keys entries"),
    ],
)
def test_bad_user_data_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_user_data(text)


def test_unknown_keys_warn_but_pass(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    kind, data = parse_user_data("#cloud-config\ncolour: red\npackages: [a]\n")
    assert kind == "cloud-config" and data == {"colour": "red", "packages": ["a"]}
    assert "unknown cloud-config keys (cloud-init ignores them): colour" in caplog.text


def test_ssh_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pub = tmp_path / "id.pub"
    pub.write_text(KEY + "\n")
    assert read_public_key(str(pub)) == KEY
    assert check_public_key(_key("ssh-rsa")).startswith("ssh-rsa ")
    with pytest.raises(InvalidInput, match=r"cannot read SSH key file .*missing"):
        read_public_key(str(tmp_path / "missing"))
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...\n"
                       "-----END OPENSSH PRIVATE KEY-----\n")  # fmt: skip
    caplog.set_level(logging.WARNING)
    with pytest.raises(InvalidInput, match="private key, not a public one") as refused:
        read_public_key(str(private))
    assert "b3Blbn" not in str(refused.value) and "was not stored" in caplog.text
    mismatched = _key("ssh-rsa").replace("ssh-rsa", "ssh-ed25519", 1)
    for bad, message in (("hello world", "not an SSH public key"),
                         ("ssh-ed25519 !!!notbase64", "not base64"),
                         (mismatched, "does not match")):  # fmt: skip
        with pytest.raises(InvalidInput, match=message):
            check_public_key(bad)


def test_passwords_are_hashed_never_kept() -> None:
    hashed = hash_password("hunter2")
    assert hashed.startswith("$6$") and "hunter2" not in hashed
    assert hash_password(hashed) == hashed
    with pytest.raises(InvalidInput, match="empty"):
        hash_password("")


def test_validating_a_spec_runs_no_process_the_seed_hashes_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from virtkit.cloudinit import password
    from virtkit.specs import parse_vm_spec

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a process was run while a spec was validated")

    with monkeypatch.context() as patched:
        patched.setattr(password, "hash_password", refuse)
        patched.setattr(subprocess, "run", refuse)
        patched.setattr(subprocess, "Popen", refuse)
        spec = parse_vm_spec({"name": "web1", "cloud_init": {"user": "admin", "password": " s3 "}})
    c = spec.cloud_init
    assert c is not None and c.password is not None and c.password_hash is None
    assert "s3" not in repr(spec) and "s3" not in spec.model_dump_json()
    ci = CloudInit(user="admin", password=c.password.get_secret_value())
    assert "s3" not in repr(ci)
    users = yaml.safe_load(render_user_data(ci, "web1"))["users"]
    hashed = users[1]["passwd"]
    assert hashed.startswith("$6$") and hashed == crypt_hash(" s3 ", hashed)
    with pytest.raises(InvalidInput) as info:
        parse_vm_spec({"name": "web1", "cloud_init": {"password": ""}})
    assert info.value.code == "invalid_password"
    already = parse_vm_spec({"name": "w", "cloud_init": {"password": hashed}}).cloud_init
    assert already is not None and already.password is None and already.password_hash == hashed


def crypt_hash(password: str, salted: str) -> str:
    done = subprocess.run(["openssl", "passwd", "-6", "-salt", salted.split("$")[2], "-stdin"],
                          input=password, capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("198.18.0.300/24", None), "invalid --ip"),
        (("198.18.0.10", None), "needs a prefix"),
        (("198.18.0.10/33", None), "invalid --ip"),
        (("198.18.0.10/24", "198.18.1.1"), "outside 198.18.0.0/24"),
        (("198.18.0.10/24", "gw"), "invalid --gateway"),
    ],
)
def test_bad_static_addressing(args: tuple[str, str | None], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        static_network(args[0], args[1], [], None)


def test_network_config_files() -> None:
    v2 = parse_network_config("network:\n  version: 2\n  ethernets: {eth0: {dhcp4: true}}\n")
    assert v2["version"] == 2
    v1 = parse_network_config("version: 1\nconfig: [{type: physical, name: eth0}]\n")
    assert v1["version"] == 1
    for bad in ("version: 3\n", "version: 2\n", "version: 1\nconfig: x\n", "[1, 2\n"):
        with pytest.raises(InvalidInput):
            parse_network_config(bad)


def test_unknown_seed_format_and_configdrive_limits() -> None:
    with pytest.raises(InvalidInput, match="unknown seed format 'floppy'"):
        build_seed(CloudInit(seed="floppy"), "vm", "i-1")
    v1 = {"version": 1, "config": []}
    with pytest.raises(InvalidInput, match="needs --seed nocloud"):
        build_seed(CloudInit(seed="configdrive", network_config=v1), "vm", "i-1")


def test_a_multipart_user_data_keeps_its_parts() -> None:
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    theirs = MIMEMultipart()
    theirs.attach(MIMEText("#!/bin/sh\necho one\n", "x-shellscript"))
    theirs.attach(MIMEText("#cloud-config\ntimezone: UTC\n", "cloud-config"))
    out = render_user_data(CloudInit(user="admin", user_data=theirs.as_string()), "vm")
    import email

    parts = [p.get_content_type() for p in email.message_from_string(out).get_payload()]
    assert parts == ["text/cloud-config", "text/x-shellscript", "text/cloud-config"]


# -- SSH host keys made by virtkit ------------------------------------------------------------


@pytest.fixture(scope="module")
def host_keys() -> list[HostKey]:
    return PendingHostKeys().result()


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files of the code under test go here (not the machine's shared /tmp)."""
    place = tmp_path / "tmp"
    place.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(place))
    return place


def test_host_keys_are_real_key_pairs_of_cloud_inits_types(
    host_keys: list[HostKey], tmp_path: Path, own_tmp: Path
) -> None:
    assert [k.type for k in host_keys] == ["ed25519", "ecdsa", "rsa"]
    for key in host_keys:
        private = tmp_path / key.type
        private.write_text(key.private)
        private.chmod(0o600)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], check=True,
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
        assert " ".join(derived[:2]) == key.public
        listed = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=key.public, check=True,
                                capture_output=True, text=True).stdout.split()  # fmt: skip
        assert key_fingerprint(key.public) == listed[1]
        assert key.private not in repr(key)  # never in a log line or an assertion diff
    assert key_fingerprint("ssh-ed25519 !!!") == "?"
    PendingHostKeys().result()
    assert list(own_tmp.iterdir()) == []  # nothing left


def test_a_failing_ssh_keygen_is_an_error_and_leaves_nothing(own_tmp: Path) -> None:
    pending = PendingHostKeys(("ed25519", "no-such-type"))
    with pytest.raises(VirtkitError, match="could not make a no-such-type host key"):
        pending.result()
    PendingHostKeys().cancel()  # given up before its result: its processes and files go
    assert list(own_tmp.iterdir()) == []


def test_host_keys_go_to_cloud_inits_ssh_keys(host_keys: list[HostKey]) -> None:
    for seed in ("nocloud", "configdrive"):
        iso = build_seed(CloudInit(user="admin", seed=seed, host_keys=host_keys), "vm", "i-1")
        _v, files = read_seed(iso)
        user_data = files["user-data" if seed == "nocloud" else "openstack/latest/user_data"]
        ssh_keys = yaml.safe_load(user_data)["ssh_keys"]
        assert ssh_keys == {f"{k.type}_{half}": getattr(k, half) for k in host_keys
                            for half in ("private", "public")}  # fmt: skip
    assert "ssh_keys" not in yaml.safe_load(render_user_data(CloudInit(), "vm"))


@pytest.mark.parametrize(
    ("user_data", "decides"),
    [
        (None, False),
        ("#cloud-config\npackages: [git]\n", False),
        ("#cloud-config\nssh_keys: {ed25519_private: x, ed25519_public: y}\n", True),
        ("#cloud-config\nssh_genkeytypes: [ed25519]\n", True),
        ("#!/bin/sh\necho ssh_keys\n", False),
    ],
)
def test_a_user_data_that_sets_host_keys_keeps_them(user_data: str | None, decides: bool) -> None:
    assert sets_host_keys(user_data) is decides


def test_host_keys_in_a_multipart_user_data() -> None:
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    theirs = MIMEMultipart()
    theirs.attach(MIMEText("#!/bin/sh\necho one\n", "x-shellscript"))
    assert not sets_host_keys(theirs.as_string())
    theirs.attach(MIMEText("#cloud-config\ntimezone: UTC\n", "cloud-config"))
    assert not sets_host_keys(theirs.as_string())
    theirs.attach(MIMEText("#cloud-config\nssh_genkeytypes: [rsa]\n", "cloud-config"))
    assert sets_host_keys(theirs.as_string())
    # cloud-init reads an untyped (text/plain) part by its first line, base64 or not
    plain = MIMEMultipart()
    plain.attach(MIMEText("#cloud-config\nssh_keys: {}\n", "plain", "utf-8"))
    assert sets_host_keys(plain.as_string())


def test_a_clone_gets_new_host_keys_in_every_seed_format(host_keys: list[HostKey]) -> None:
    import email

    other = PendingHostKeys().result()
    script = "#!/bin/sh\necho hi\n"
    for seed, user_data in (("nocloud", None), ("configdrive", None), ("nocloud", script)):
        ci = CloudInit(user="admin", seed=seed, host_keys=host_keys, user_data=user_data)
        _v, files = read_seed(reseed(build_seed(ci, "src", "i-1"), "copy", "i-2",
                                     host_keys=other))  # fmt: skip
        text = files["user-data" if seed == "nocloud" else "openstack/latest/user_data"].decode()
        if user_data is None:
            config = yaml.safe_load(text)
        else:  # multipart: its cloud-config part rewritten, the script kept
            parts = email.message_from_string(text).get_payload()
            assert [p.get_content_type() for p in parts] == ["text/cloud-config",
                                                             "text/x-shellscript"]  # fmt: skip
            assert parts[1].get_payload(decode=True).decode() == script
            config = yaml.safe_load(parts[0].get_payload(decode=True))
        assert config["hostname"] == "copy"
        assert config["ssh_keys"] == host_keys_config(other)
        assert config["users"][1]["name"] == "admin"
    # without new keys (the guest made its own), the user-data keeps what it had
    plain = build_seed(CloudInit(user="admin"), "src", "i-1")
    _v, files = read_seed(reseed(plain, "copy", "i-2"))
    assert "ssh_keys" not in yaml.safe_load(files["user-data"])
    # none could be made: the original's go, and the clone's cloud-init makes its own
    pinned = build_seed(CloudInit(user="admin", host_keys=host_keys), "src", "i-1")
    _v, files = read_seed(reseed(pinned, "copy", "i-2", host_keys=[]))
    assert "ssh_keys" not in yaml.safe_load(files["user-data"])
    # a user-data virtkit cannot rewrite: refused, rather than a clone with the old keys
    script_only = build_seed(CloudInit(), "src", "i-1")
    volume, files = read_seed(script_only)
    files["user-data"] = b"#!/bin/sh\necho hi\n"
    with pytest.raises(InvalidInput, match="host keys of its own"):
        reseed(_iso(volume, files), "copy", "i-2", host_keys=other)
