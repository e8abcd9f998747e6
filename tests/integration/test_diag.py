"""``virtkit diag bundle`` on a real private libvirtd: a running tiny guest with a VNC password
and a cloud-init seed full of secrets (a password, its hash, SSH host private keys, a chpasswd
list, a token in a file), an API token, a task and an audit entry in the store; the bundle made
through the CLI holds the files a helper needs and not one of those secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import VIRTKIT, Bed, tiny_spec, wait_for_text
from virtkit.cloudinit import read_seed
from virtkit.specs import parse_vm_spec

pytestmark = pytest.mark.integration

PASSWORD = "Diag-Login-Pw-7q"
ROOT_PW = "Diag-Root-Pw-3k"
FILE_TOKEN = "Diag-File-Token-9z"
USER_DATA = f"""#cloud-config
chpasswd:
  expire: false
  list: |
    root:{ROOT_PW}
write_files:
  - path: /etc/app.env
    content: "API_TOKEN={FILE_TOKEN}"
"""
PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(.*?)-----END", re.DOTALL)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for info in tar.getmembers():
            f = tar.extractfile(info)
            assert f is not None and info.mode == 0o600
            out[info.name.split("/", 1)[1]] = f.read()
    return out


def test_bundle_of_a_real_vm_has_its_files_and_no_secret(
    bed: Bed, vm_name: str, tmp_path: Path
) -> None:
    spec = tiny_spec(
        bed,
        vm_name,
        graphics="vnc",
        cloud_init={"user": "admin", "password": PASSWORD, "host_keys": True,
                    "user_data": USER_DATA},
    )  # fmt: skip
    token = ""
    with bed.client() as vk:
        vk.vms.create(parse_vm_spec(spec), start=True)
        wait_for_text(bed, vm_name)
        guest = vk.host.lookup(vm_name)
        graphics = ET.fromstring(guest.xml(secure=True)).findall("devices/graphics")
        vnc_password = graphics[0].get("passwd")
        assert vnc_password  # virtkit gives every display a password
        seed = next(bed.pool_dir.glob(f"{vm_name}*seed*.iso"))
        _label, files = read_seed(seed.read_bytes())
        user_data = files["user-data"].decode()
        hashes = re.findall(r"\$6\$[^\s'\"]+", user_data)
        # the private keys' lines, but not the parts that are the public key inside them
        public = PEM.sub("", user_data)
        keys = [
            line.strip()
            for body in PEM.findall(user_data)
            for line in body.splitlines()
            if len(line.strip()) > 16 and line.strip() not in public
        ]
        assert hashes and keys and ROOT_PW in user_data and FILE_TOKEN in user_data
        try:
            vk.users.add(vm_name, "viewer", "Diag-User-Pw-5x")
            _info, token = vk.users.create_token(vm_name, "diag", None)
        except Exception as exc:  # the api extra (argon2) is missing: no users then
            print(f"no API token in this test: {exc}")
        vk.audit.record("local:root", "vm create", vm_name, "ok", detail=f"token={token or 'x'}")
        from virtkit.services.tasks import TaskRunner

        runner = TaskRunner(vk.store, workers=1)
        task = runner.submit("vm.create", vm_name, "local:root",
                             lambda h: h.log(f"runcmd: echo root:{ROOT_PW} | chpasswd; "
                                             f"password={PASSWORD}"))  # fmt: skip
        runner.wait(task.id, 10)
        runner.shutdown()
        pools = vk.host.storage.pool_names()
        networks = vk.host.networks.names()

    out = tmp_path / "bundle.tar.gz"
    env = bed.env()  # its qemu_log_dir is the private daemon's
    try:
        done = subprocess.run(
            [VIRTKIT, "diag", "bundle", vm_name, "-o", str(out), "--json"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        made = json.loads(done.stdout)
        assert made["path"] == str(out) and made["size"] == out.stat().st_size
        assert os.stat(out).st_mode & 0o777 == 0o600
        assert os.listdir(tmp_path) == ["bundle.tar.gz"]
        members = _members(out)
        base = f"vms/{vm_name}"
        expected = {
            "MANIFEST.json", "host/info.json", "host/versions.json", "host/doctor.json",
            "host/doctor.txt", f"{base}/domain.xml", f"{base}/domain-inactive.xml",
            f"{base}/doctor.json", f"{base}/doctor.txt", f"{base}/cloud-init.json",
            f"logs/qemu/{vm_name}.log", f"logs/console/{vm_name}-serial0.log",
            "virtkit/tasks.json", "virtkit/audit.json",
            *(f"pools/{p}.xml" for p in pools), *(f"networks/{n}.xml" for n in networks),
        }  # fmt: skip
        assert expected <= set(members), expected - set(members)
        assert bed.settings.storage_pool in pools

        secrets = [vnc_password, PASSWORD, ROOT_PW, FILE_TOKEN, "Diag-User-Pw-5x", *hashes, *keys]
        if token:
            secrets.append(token)
        leaks = [
            (name, secret)
            for name, data in members.items()
            for secret in secrets
            if secret.encode() in data
        ]
        assert leaks == []

        # what is around the secrets is still there
        info = json.loads(members["host/info.json"])
        assert info["uri"] == bed.uri
        assert json.loads(members[f"{base}/doctor.json"])["subject"] == f"vm {vm_name}"
        seed_view = json.loads(members[f"{base}/cloud-init.json"])
        assert "admin" in json.dumps(seed_view)
        assert ET.fromstring(members[f"{base}/domain.xml"]).findtext("name") == vm_name
        assert b"qemu" in members[f"logs/qemu/{vm_name}.log"].lower()
        tasks = json.loads(members["virtkit/tasks.json"])
        mine = next(t for t in tasks if t["id"] == task.id)
        assert any("echo root:(redacted) | chpasswd" in entry["line"] for entry in mine["log"])
        manifest = json.loads(members["MANIFEST.json"])
        listed = {f["path"]: f for f in manifest["files"]}
        assert set(listed) == set(members) - {"MANIFEST.json"}
        assert manifest["vms"] == [vm_name]
        assert listed["virtkit/tasks.json"]["redacted"]
        assert sum(made["redactions"].values()) >= 2

        # the text output: the path and its size at the end
        again = subprocess.run(
            [VIRTKIT, "diag", "bundle", vm_name, "-o", str(tmp_path / "b2.tar.gz")],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().startswith(f"{tmp_path / 'b2.tar.gz'} (")
    finally:
        with bed.client() as vk:
            try:
                vk.users.delete(vm_name)
            except Exception as exc:
                print(f"no user to remove: {exc}")
