"""schemathesis against the OpenAPI document of a running ``virtkit serve``: at least 2,000
generated requests with an admin token, no 5xx, every response (status, content type, body)
as documented. The service runs on libvirt's ``test:///default`` driver (in memory: whatever
the fuzzer deletes or creates there is gone with the process) with a copy of the KSM
directory, so nothing on the machine changes (the two routes that would change the machine
itself are left out)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import VIRTKIT
from tests.integration.apiserver import free_port

pytestmark = pytest.mark.integration

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MIN_REQUESTS = 2000


def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(tmp_path: Path) -> None:
    ksm = tmp_path / "ksm"
    ksm.mkdir()
    for f in Path("/sys/kernel/mm/ksm").iterdir():
        if f.is_file():
            shutil.copy(f, ksm / f.name)
    # A copy never unmerges: with pages merged on the host when it was made, every
    # POST /host/ksm/unmerge would wait its 60 s for pages_shared to fall.
    (ksm / "pages_shared").write_text("0\n")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(tmp_path),
        "VIRTKIT_URI": "test:///default",
        "VIRTKIT_STATE_DIR": str(tmp_path / "state"),
        "VIRTKIT_CACHE_DIR": str(tmp_path / "cache"),
        "VIRTKIT_KSM_ROOT": str(ksm),
        "VIRTKIT_CONFIG": "/nonexistent",
        "VIRTKIT_CONSOLE_LOG_DIR": str(tmp_path / "logs"),
        "VIRTKIT_STORAGE_POOL_PATH": str(tmp_path / "images"),
    }

    def cli(*args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [VIRTKIT, *args], env=env, capture_output=True, text=True, input=input, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("user", "add", "fuzz", "--role", "admin", "--password-stdin", input="fuzz-password-1")
    token = cli("user", "token", "create", "fuzz").strip().splitlines()[-1]
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 -- closed below
    server = subprocess.Popen(
        [VIRTKIT, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        run = subprocess.run(
            [SCHEMATHESIS, "run", f"{url}/api/v1/openapi.json",
             "-H", f"Authorization: Bearer {token}", "-n", "20", "--seed", "1",
             "--checks", "not_a_server_error,response_schema_conformance,"
             "status_code_conformance,content_type_conformance",
             "--exclude-path", "/api/v1/events",  # an endless stream (tested in test_api)
             # these act on this machine itself, not on the test driver: /dev/kvm's mode, and
             # debootstrap from the network as root (tests/unit/test_api_endpoints.py has them)
             "--exclude-path", "/api/v1/host/fix-kvm", "--exclude-path", "/api/v1/images/build",
             # the doctor's fixes change this machine too (device modes, THP, modules,
             # hugepages, pool directories): tests/unit/test_doctor.py has them
             "--exclude-path", "/api/v1/host/doctor/fix",
             "--exclude-path", "/api/v1/vms/{name}/doctor/fix",
             # registering a host connects to the URI given: never to random ones
             "--exclude-path", "/api/v1/hosts",
             "--request-timeout", "20"],
            env={**env, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=900,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()
    out = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", out)
    assert generated is not None, out[-3000:]
    assert int(generated.group(1)) >= MIN_REQUESTS, out[-3000:]
    assert run.returncode == 0, out[-6000:]
    assert "Traceback" not in (tmp_path / "serve.log").read_text(errors="replace")
