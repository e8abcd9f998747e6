"""``virtkit diag bundle``: the redaction on real-looking inputs, the size caps, and a whole
bundle made against libvirt's test driver (a per-test node file) with a store, logs and
secrets planted everywhere a bundle reads."""

from __future__ import annotations

import json
import os
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from virtkit import Client, Settings
from virtkit.cli.main import cli
from virtkit.doctor.bundle import _safe, read_tail, tail
from virtkit.doctor.redact import KINDS, REDACTED, redact
from virtkit.errors import AlreadyExists, NotFound

VNC_PW = "Vnc8pw!x"
SPICE_PW = "spice-Secret-42"
HASH = "$6$rounds=4096$saltsalt$Q2tP0bVJ3d8mN1rKx8yZ.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789ab"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBZc2VjcmV0LWtleS1tYXRlcmlhbC1ub3QtcmVhbAAAAJj0aGlzaXNzZWNy\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
KEY_BODY = "QyNTUxOQAAACBZc2VjcmV0LWtleS1tYXRlcmlhbC1ub3QtcmVhbAAAAJj0aGlzaXNzZWNy"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFpublickeyisfineToShowXXXXXXXXXXXXXX me@laptop"

DOMAIN = f"""<domain type='test'>
  <name>vktest-diag</name>
  <uuid>5b1e0d5c-2f0e-4e8a-9a55-3c2d1f0e9a11</uuid>
  <memory unit='KiB'>131072</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1' passwd='{VNC_PW}'/>
    <graphics type="spice" autoport="yes" passwd="{SPICE_PW}"/>
  </devices>
</domain>"""
OTHER = """<domain type='test'>
  <name>vktest-other</name>
  <memory unit='KiB'>131072</memory>
  <os><type arch='x86_64'>hvm</type></os>
</domain>"""


# -- the redaction --------------------------------------------------------------------------------


def test_domain_xml_graphics_passwords_are_redacted_and_the_xml_stays_valid() -> None:
    text, counts = redact(DOMAIN)
    assert VNC_PW not in text and SPICE_PW not in text
    graphics = ET.fromstring(text).findall("devices/graphics")
    assert [g.get("passwd") for g in graphics] == [REDACTED, REDACTED]
    assert graphics[0].get("listen") == "127.0.0.1"  # the rest is kept
    assert counts == {"key-values": 2}


def test_xml_secret_elements_are_redacted() -> None:
    xml = (
        "<auth username='admin'><secret type='iscsi' usage='libvirtiscsi'/></auth>"
        "<source><passwd>Elem3ntPw</passwd><secret>c2VjcmV0LXZhbHVl</secret></source>"
    )
    text, counts = redact(xml)
    assert "Elem3ntPw" not in text and "c2VjcmV0LXZhbHVl" not in text
    assert "usage='libvirtiscsi'" in text and "username='admin'" in text
    assert counts["xml-elements"] == 2


def test_cloud_init_user_data_secrets_are_redacted() -> None:
    user_data = f"""#cloud-config
users:
  - name: admin
    passwd: "{HASH}"
    plain_text_passwd: Plain-Text-1
    ssh_authorized_keys: ["{PUBLIC_KEY}"]
password: TopLevel-Pw-2
chpasswd:
  expire: false
  list: |
    root:RootPw-3
    admin:AdminPw-4
  users:
    - {{name: bob, password: BobPw-5, type: text}}
ssh_keys:
  ed25519_private: |
    {PRIVATE_KEY.replace(chr(10), chr(10) + "    ")}
  ed25519_public: {PUBLIC_KEY}
write_files:
  - path: /etc/app.conf
    content: "api_token=Tok-6-abcdef"
runcmd:
  - curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig' https://x/api
hashed: {HASH}
"""
    text, counts = redact(user_data)
    secrets = ["Plain-Text-1", "TopLevel-Pw-2", "RootPw-3", "AdminPw-4", "BobPw-5", "Tok-6",
               "eyJhbGciOiJIUzI1NiJ9", HASH, "saltsalt", KEY_BODY]  # fmt: skip
    assert [s for s in secrets if s in text] == []
    assert PUBLIC_KEY in text  # public keys are no secret
    parsed = yaml.safe_load(text)  # still YAML
    assert parsed["chpasswd"]["expire"] is False
    assert parsed["users"][0]["name"] == "admin"
    assert counts["private-keys"] == 1 and counts["chpasswd-pairs"] == 2
    assert counts["password-hashes"] == 2


def test_a_user_data_inside_a_json_string_is_redacted_and_keeps_its_lines() -> None:
    """A seed view or a task log in a JSON file: the whole user-data is one line with "\\n"
    escapes; a value must end at an escape, not run on into the next line."""
    user_data = (
        "#cloud-config\nusers:\n  - name: admin\n    lock_passwd: false\n"
        f"    passwd: {HASH}\nssh_pwauth: true\nchpasswd:\n  list: |\n    root:Json-Pw-1\n"
        "  expire: false\nwrite_files:\n  - content: API_TOKEN=Json-Tok-2\nhostname: web1\n"
        "runcmd:\n  - echo 'bob:Json-Pw-3' | chpasswd\n"
    )
    text, counts = redact(json.dumps({"text": user_data}, indent=2))
    shown = json.loads(text)["text"]
    assert [s for s in ("Json-Pw-1", "Json-Tok-2", "Json-Pw-3", "saltsalt") if s in text] == []
    for kept in ("lock_passwd: false", "ssh_pwauth: true", "expire: false", "hostname: web1"):
        assert kept + "\n" in shown
    assert counts == {"chpasswd-pairs": 2, "key-values": 1, "password-hashes": 1}


def test_chpasswd_as_a_flow_list_and_mapping() -> None:
    text, _ = redact("chpasswd: {list: [root:Flow-Pw-1, 'joe:Flow-Pw-2'], expire: true}\n")
    assert "Flow-Pw-1" not in text and "Flow-Pw-2" not in text
    assert "root:" in text and "expire: true" in text


def test_log_lines_with_tokens_and_passwords() -> None:
    log = "\n".join(
        [
            "2026-12-07 10:00:01 POST /api/v1/vms Authorization: Bearer vkt_AbCdEf0123456789xyz",
            "GET /api/v1/events?token=QueryTok-77&vm=web1 200",
            "connecting to https://admin:UrlPw-88@mirror.example/debian",
            "virsh -c qemu:///system set-user-password web1 root --password=CliPw-99",
            '{"user": "bob", "password": "JsonPw-11", "token": null}',
            "export VIRTKIT_API_TOKEN=EnvTok-12",
            "Cookie: virtkit_session=Sess-13-abcdef; Path=/",
            "a token vkt_ZZZZyyyyXXXXwwww1234 pasted alone",
            "-vnc 127.0.0.1:0,password=on -spice port=5901",
            "stored $argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$QXJnb25IYXNoVmFsdWU for alice",
        ]
    )
    text, counts = redact(log)
    secrets = ["vkt_AbCdEf", "QueryTok-77", "UrlPw-88", "CliPw-99", "JsonPw-11", "EnvTok-12",
               "Sess-13", "vkt_ZZZZ", "c2FsdHNhbHQ", "QXJnb25IYXNoVmFsdWU"]  # fmt: skip
    assert [s for s in secrets if s in text] == []
    assert "&vm=web1 200" in text and "mirror.example/debian" in text
    assert "password=on" in text  # QEMU's switch is no secret
    assert '"token": null' in text
    assert counts["authorization-headers"] == 1 and counts["url-credentials"] == 1
    assert counts["password-hashes"] == 1 and text.endswith("(redacted) for alice")


def test_a_private_key_cut_by_truncation_is_still_hidden() -> None:
    lines = PRIVATE_KEY.split("\n")
    begin_cut = "\n".join(lines[2:]) + "\nafter"  # the tail of a log: BEGIN and a line are gone
    text, counts = redact(begin_cut)
    assert counts == {"private-keys": 1}
    assert KEY_BODY not in text and text.endswith("after")
    end_cut = "before\n" + "\n".join(lines[:3])  # the END line not yet written
    text, _ = redact(end_cut)
    assert KEY_BODY not in text and text.startswith("before")


def test_the_manifests_own_counts_survive_the_redaction() -> None:
    every = {"path": "x", "truncated": True, "redacted": {kind: 3 for kind in KINDS}}
    counts_text = json.dumps(every, indent=2)
    assert redact(counts_text) == (counts_text, {})


def test_ordinary_text_is_left_alone() -> None:
    text = (
        "2026-12-07 10:00:00.000+0000: starting up libvirt version: 9.0.0\n"
        "LC_ALL=C /usr/bin/qemu-system-x86_64 -name guest=web1,debug-threads=on "
        '-object {"qom-type":"secret","id":"masterKey0","format":"raw"}\n'
        "<network><name>default</name><ip address='198.18.0.1' prefix='24'/></network>\n"
        "sha256 $HOME/x and a dollar $5 amount\n"
    )
    assert redact(text) == (text, {})


# -- caps -----------------------------------------------------------------------------------------


def test_tail_keeps_whole_lines_within_the_cap(tmp_path: Path) -> None:
    data = b"".join(b"line %04d password=Pw%04d\n" % (i, i) for i in range(1000))
    kept, cut = tail(data, 1000)
    assert cut and len(kept) <= 1000 and kept.startswith(b"line ") and data.endswith(kept)
    assert tail(data, len(data)) == (data, False)
    path = tmp_path / "x.log"
    path.write_bytes(data)
    got, size, truncated = read_tail(path, 1000)
    assert (got, size, truncated) == (kept, len(data), True)
    assert read_tail(path, len(data)) == (data, len(data), False)
    # a cut that falls exactly at a line start keeps that line
    line = len(b"line 0000 password=Pw0000\n")
    assert read_tail(path, 3 * line)[0] == data[-3 * line :]


def test_member_names_stay_inside_the_bundle() -> None:
    assert [_safe(n) for n in ("..", ".hidden", "a/../b", "web1", "")] == [
        "_.",
        "_hidden",
        "a_.._b",
        "web1",
        "_",
    ]


# -- a bundle on the test driver ------------------------------------------------------------------


NODE = f"""<node>
{DOMAIN}
{OTHER}
<network>
  <name>lab</name>
  <bridge name='virbr9'/>
  <ip address='198.18.9.1' netmask='255.255.255.0'/>
</network>
<pool type='dir'>
  <name>vkpool</name>
  <capacity unit='GiB'>10</capacity>
  <target><path>/var/lib/virtkit-test-pool</path></target>
</pool>
</node>"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    for sub in ("qemu", "console", "state", "cache"):
        (tmp_path / sub).mkdir()
    return Settings(
        uri=f"test://{node}",
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        qemu_log_dir=tmp_path / "qemu",
        console_log_dir=tmp_path / "console",
    )


@pytest.fixture
def planted(settings: Settings, tmp_path: Path) -> Iterator[tuple[Client, str]]:
    """A client of the test driver, with secrets planted in its logs and store; and the API
    token made."""
    client = Client(settings=settings)
    qemu_log = settings.qemu_log_dir / "vktest-diag.log"
    # bigger than the 64 KiB cap used below: only its tail goes in
    qemu_log.write_text(
        "".join(f"{i:06d} early line, url=https://u:LogPw-{i}@h/\n" for i in range(4000))
        + "2026-12-07 qemu-system-x86_64: -drive file=/x: Could not open '/x': Permission denied\n"
    )
    (settings.console_log_dir / "vktest-diag-serial0.log").write_text(
        "login: root\nPassword: Console-Pw-1\nvirtkit tiny guest booted\n"
    )
    (tmp_path / "libvirtd.log").write_text(
        "info : virDomainUpdateDeviceFlags: xml=<graphics type='vnc' passwd='Live-Pw-2'/>\n"
    )
    # the store: a user with a password and an API token, a task whose log holds a secret,
    # and an audit entry
    user_token = ""
    try:
        client.users.add("alice", "admin", "Alice-Login-Pw-3")
        _info, user_token = client.users.create_token("alice", "ci", None)
    except Exception as exc:  # argon2 is the api extra
        pytest.skip(f"users need the api extra: {exc}")
    from virtkit.services.tasks import TaskRunner

    runner = TaskRunner(client.store, workers=1)
    line = f"seed made, password=Task-Pw-4 token {user_token}"
    task = runner.submit("vm.create", "vktest-diag", "alice", lambda h: h.log(line))
    runner.wait(task.id, 10)
    runner.shutdown()
    client.audit.record("alice", "user passwd", "alice", "ok", detail="password=Audit-Pw-5")
    yield client, user_token
    client.close()


@pytest.fixture
def vk(planted: tuple[Client, str]) -> Client:
    return planted[0]


SECRETS = [VNC_PW, SPICE_PW, "LogPw-", "Console-Pw-1", "Live-Pw-2", "Alice-Login-Pw-3",
           "Task-Pw-4", "Audit-Pw-5", "$argon2"]  # fmt: skip


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for info in tar.getmembers():
            assert info.isfile() and info.mode == 0o600
            f = tar.extractfile(info)
            assert f is not None
            out[info.name.split("/", 1)[1]] = f.read()
        return out


def _bundle(vk: Client, tmp_path: Path, **kwargs: object) -> tuple[object, dict[str, bytes]]:
    from virtkit.doctor.bundle import DiagService

    service: DiagService = vk.diag
    service.libvirtd_log = tmp_path / "libvirtd.log"
    service.file_cap = 64 * 1024
    made = service.bundle(["vktest-diag"], output=tmp_path / "out" / "b.tar.gz", **kwargs)  # type: ignore[arg-type]
    return made, _members(Path(made.path))


def test_bundle_on_the_test_driver(planted: tuple[Client, str], tmp_path: Path) -> None:
    vk, token = planted
    (tmp_path / "out").mkdir()
    made, members = _bundle(vk, tmp_path)
    path = Path(made.path)  # type: ignore[attr-defined]
    assert path == tmp_path / "out" / "b.tar.gz"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path / "out")) == ["b.tar.gz"]  # no temporary file left
    expected = {
        "MANIFEST.json", "host/versions.json", "host/capabilities.xml", "host/doctor.json",
        "host/doctor.txt", "vms/vktest-diag/domain.xml", "vms/vktest-diag/doctor.json",
        "vms/vktest-diag/doctor.txt", "vms/vktest-other/domain.xml", "networks/lab.xml",
        "pools/vkpool.xml", "logs/qemu/vktest-diag.log",
        "logs/console/vktest-diag-serial0.log", "logs/libvirtd.log", "virtkit/tasks.json",
        "virtkit/audit.json",
    }  # fmt: skip
    assert expected <= set(members), expected - set(members)
    for name, data in members.items():
        for secret in [*SECRETS, token]:
            assert secret.encode() not in data, f"{secret!r} in {name}"
    # what the secrets were around is still there
    assert b"Permission denied" in members["logs/qemu/vktest-diag.log"]
    assert b"virtkit tiny guest booted" in members["logs/console/vktest-diag-serial0.log"]
    doctor = json.loads(members["vms/vktest-diag/doctor.json"])
    assert doctor["subject"] == "vm vktest-diag" and doctor["findings"]
    tasks = json.loads(members["virtkit/tasks.json"])
    assert tasks[0]["kind"] == "vm.create" and any(
        "seed made, password=(redacted)" in entry["line"] for entry in tasks[0]["log"]
    )
    audit = json.loads(members["virtkit/audit.json"])
    assert audit[0]["action"] == "user passwd"

    manifest = json.loads(members["MANIFEST.json"])
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == set(members) - {"MANIFEST.json"}
    for name, entry in files.items():
        assert entry["size"] == len(members[name])
    qemu = files["logs/qemu/vktest-diag.log"]
    assert qemu["truncated"] and qemu["original_size"] > 64 * 1024 >= qemu["size"] - 4096
    assert qemu["redacted"]["url-credentials"] > 100
    # fetched without VIR_DOMAIN_XML_SECURE: libvirt leaves the passwords out (the redaction
    # would catch them, as it did in libvirtd's log)
    graphics = ET.fromstring(members["vms/vktest-diag/domain.xml"]).findall("devices/graphics")
    assert len(graphics) == 2 and all(g.get("passwd") in (None, REDACTED) for g in graphics)
    assert files["logs/libvirtd.log"]["redacted"] == {"key-values": 1}
    assert files["virtkit/tasks.json"]["redacted"]
    assert manifest["vms"] == ["vktest-diag"] and manifest["uri"] == vk.uri
    assert manifest["defined_vms"] == ["vktest-diag", "vktest-other"]
    # the kernel log is this machine's own: long on some machines, then cut too
    truncated = made.truncated  # type: ignore[attr-defined]
    assert truncated == [name for name, f in files.items() if f["truncated"]]
    assert "logs/qemu/vktest-diag.log" in truncated
    assert set(truncated) <= {"logs/qemu/vktest-diag.log", "host/dmesg.txt"}
    assert sum(made.redactions.values()) > 100  # type: ignore[attr-defined]


def test_the_total_cap_leaves_files_out_and_says_so(vk: Client, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    vk.diag.total_cap = 40 * 1024
    made, members = _bundle(vk, tmp_path)
    assert "logs/qemu/vktest-diag.log" not in members
    assert any(s.startswith("logs/qemu/vktest-diag.log: the bundle's total cap")
               for s in made.skipped)  # type: ignore[attr-defined]  # fmt: skip
    manifest = json.loads(members["MANIFEST.json"])
    assert sum(f["size"] for f in manifest["files"]) <= 40 * 1024
    assert manifest["skipped"] == made.skipped  # type: ignore[attr-defined]


def test_nothing_is_left_when_writing_fails(
    vk: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "addfile", full)
    with pytest.raises(OSError, match="No space left"):
        _bundle(vk, tmp_path)
    assert os.listdir(out) == []


def test_an_unknown_vm_or_an_existing_file_is_refused_before_anything(
    vk: Client, tmp_path: Path
) -> None:
    with pytest.raises(NotFound):
        vk.diag.bundle(["vktest-nope"], output=tmp_path / "a.tar.gz")
    existing = tmp_path / "b.tar.gz"
    existing.write_bytes(b"keep")
    with pytest.raises(AlreadyExists):
        vk.diag.bundle([], output=existing)
    assert existing.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.glob("*.tar.gz*")) == ["b.tar.gz"]


def test_the_cli_writes_a_bundle_and_prints_its_path(settings: Settings, tmp_path: Path) -> None:
    env = {
        "VIRTKIT_URI": settings.uri,
        "VIRTKIT_STATE_DIR": str(settings.state_dir),
        "VIRTKIT_CACHE_DIR": str(settings.cache_dir),
        "VIRTKIT_QEMU_LOG_DIR": str(settings.qemu_log_dir),
        "VIRTKIT_CONSOLE_LOG_DIR": str(settings.console_log_dir),
        "VIRTKIT_CONFIG": "/nonexistent",
    }
    out = tmp_path / "cli.tar.gz"
    got = CliRunner().invoke(
        cli, ["diag", "bundle", "--all-vms", "-o", str(out), "--json"], env=env
    )
    assert got.exit_code == 0, got.output
    made = json.loads(got.stdout)
    assert made["path"] == str(out) and made["size"] == out.stat().st_size
    assert made["vms"] == ["vktest-diag", "vktest-other"]
    members = _members(out)
    assert {"vms/vktest-other/doctor.json", "vms/vktest-diag/doctor.json"} <= set(members)
    text = CliRunner().invoke(cli, ["diag", "bundle", "-o", str(tmp_path / "t.tar.gz")], env=env)
    assert text.exit_code == 0, text.output
    assert f"{tmp_path / 't.tar.gz'} (" in text.stdout and "files" in text.stdout
    again = CliRunner().invoke(cli, ["diag", "bundle", "-o", str(out)], env=env)
    assert isinstance(again.exception, AlreadyExists)  # main() makes it one line, exit 1
