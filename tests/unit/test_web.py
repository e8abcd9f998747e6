"""The web UI's pages on libvirt's test driver (the real app, no daemon): a session or the login
page, relative URLs, what each role sees, the error page, no open redirect, the filters.
The browser end to end is tests/integration/test_ui_e2e.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from virtkit import Client, Settings
from virtkit.api.app import create_app
from virtkit.specs.units import format_duration as duration
from virtkit.web.render import root_of, size, sparkline

PASSWORDS = {"ada": "password-ada-1", "vera": "password-vera-1"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    ksm = tmp_path / "ksm"
    ksm.mkdir()
    for f in ("run", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
              "full_scans", "pages_to_scan", "sleep_millisecs", "general_profit"):  # fmt: skip
        (ksm / f).write_text("0\n")
    settings = Settings(
        uri="test:///default",
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        ksm_root=ksm,
    )
    client = Client(settings=settings)
    client.users.add("ada", "admin", PASSWORDS["ada"])
    client.users.add("vera", "viewer", PASSWORDS["vera"])
    application = create_app(settings, client=client)
    with TestClient(application, follow_redirects=False) as tc:
        yield tc
    client.close()


def login(tc: TestClient, user: str) -> str:
    r = tc.post("/api/v1/login", json={"user": user, "password": PASSWORDS[user]})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


def test_root_of_gives_relative_urls() -> None:
    assert root_of("/") == "./"
    assert root_of("/vms") == "./"
    assert root_of("/vms/web1") == "../"
    assert root_of("/vms/web1/console") == "../../"


def test_filters() -> None:
    assert size(None) == "-"
    assert size(512) == "512 B"
    assert size(128 * 1024 * 1024) == "128 MiB"
    assert size(int(1.5 * 1024**3)) == "1.5 GiB"
    assert duration(None) == "-"
    assert duration(59) == "59s"
    assert duration(3 * 3600 + 120) == "3h 2m"
    assert duration(2 * 86400 + 3600) == "2d 1h"
    points = sparkline([0, 10, 5], width=100, height=10).split()
    assert points == ["0.0,8.0", "50.0,2.0", "100.0,5.0"]  # the peak at the top, 0 at the bottom
    assert [p.split(",")[0] for p in points] == ["0.0", "50.0", "100.0"]
    assert sparkline([]) == ""


def test_pages_need_a_session_and_send_to_login(app: TestClient) -> None:
    for path, back in (("/", ""), ("/vms", "vms"), ("/vms/test", "vms/test")):
        r = app.get(path)
        assert r.status_code == 303
        location = r.headers["location"]
        assert not location.startswith(("/", "http")), location  # relative: proxy sub-paths
        assert location.endswith("login" + (f"?next={back}" if back else ""))
    assert app.get("/login").status_code == 200
    assert app.get("/static/app/ui.js").status_code == 200  # no data in static files


def test_an_admin_sees_every_page_with_relative_links(app: TestClient) -> None:
    csrf = login(app, "ada")
    for path in ("/", "/vms", "/vms/test", "/vms/test/console", "/create", "/storage",
                 "/networks", "/templates", "/tasks", "/users", "/audit", "/health",
                 "/vms/test/health", "/hosts"):  # fmt: skip
        r = app.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert f'<meta name="csrf-token" content="{csrf}">' in r.text
        base = re.search(r'<base href="([^"]+)">', r.text)
        assert base and base.group(1) == root_of(path)
        absolute = re.findall(r'(?:href|src|hx-get)="/[^"]*"', r.text)
        assert not absolute, (path, absolute)
    page = app.get("/vms").text
    assert 'data-vm="test"' in page and "running" in page
    # The wizard offers a kernel boot (host paths) to admins.
    assert 'value="kernel"' in app.get("/create").text


def test_filter_and_sort_the_vm_list(app: TestClient) -> None:
    login(app, "ada")
    assert 'data-vm="test"' in app.get("/vms", params={"q": "tes"}).text
    assert 'data-vm="test"' not in app.get("/vms", params={"q": "nothing-like-it"}).text
    assert 'data-vm="test"' not in app.get("/vms", params={"state": "shutoff"}).text
    desc = app.get("/vms", params={"sort": "memory", "order": "desc"}).text
    assert 'aria-sort="descending"' in desc
    assert app.get("/vms", params={"order": "sideways"}).status_code == 422


def test_a_viewer_sees_no_admin_page_and_no_buttons(app: TestClient) -> None:
    login(app, "vera")
    r = app.get("/users")
    assert r.status_code == 403
    assert "lacks the permission" in r.text and "<html" in r.text  # the error page, not JSON
    assert app.get("/audit").status_code == 403
    assert app.get("/create").status_code == 403
    vm = app.get("/vms/test").text
    assert "data-api=" not in vm  # no lifecycle buttons for a viewer
    assert 'href="users"' not in app.get("/").text


def test_unknown_objects_get_the_error_page(app: TestClient) -> None:
    login(app, "ada")
    r = app.get("/vms/no-such-vm")
    assert r.status_code == 404 and "vm_not_found" in r.text
    assert app.get("/vms/a%20b").status_code == 422
    assert app.get("/tasks/nope").status_code == 404


def test_login_never_redirects_off_site(app: TestClient) -> None:
    for evil in ("https://evil.example/", "//evil.example", "/\\evil.example",
                 "javascript:alert(1)", "JaVaScRiPt:alert(document.cookie)"):  # fmt: skip
        page = app.get("/login", params={"next": evil}).text
        assert 'data-next=""' in page, evil
    assert 'data-next="vms/test"' in app.get("/login", params={"next": "vms/test"}).text


def test_a_vm_without_a_seed(app: TestClient) -> None:
    """The test driver's VM has no seed: the API says so (404 ``no_seed``), the page too."""
    login(app, "vera")
    r = app.get("/api/v1/vms/test/cloud-init")
    assert r.status_code == 404 and r.json()["code"] == "no_seed", r.text
    page = app.get("/vms/test")
    assert page.status_code == 200 and "No cloud-init seed." in page.text


def test_admins_get_the_storage_and_network_forms(app: TestClient) -> None:
    """The forms post to the API's own routes (the same calls a script makes); viewers get
    none of them."""
    login(app, "ada")
    networks = app.get("/networks").text
    assert 'data-api-form="POST api/v1/networks"' in networks
    storage = app.get("/storage").text
    assert 'data-api-form="POST api/v1/pools"' in storage
    assert 'data-api="POST api/v1/pools/default-pool/refresh"' in storage
    app.post("/api/v1/logout", headers={"X-CSRF-Token": login(app, "ada")})
    login(app, "vera")
    assert "New network" not in app.get("/networks").text
    assert "New pool" not in app.get("/storage").text
    assert "data-api=" not in app.get("/storage").text


def test_the_vm_page_has_its_backups(app: TestClient, tmp_path: Path) -> None:
    """The Backups section: none yet, then a set (newest first) with its restore form; the
    buttons only for a role that may use them."""
    import subprocess

    from virtkit.services import backupimg
    from virtkit.services.backupset import BackupRoot, publish, write_manifest
    from virtkit.specs.backup import BackupDisk, BackupSet

    login(app, "ada")
    page = app.get("/vms/test").text
    assert "No backups of this VM." in page and "Back up now" in page
    root = BackupRoot(tmp_path / "state" / "backups")
    partial = root.partial_dir("test", "20261204T000000Z-full")
    partial.mkdir(parents=True)
    image = partial / "vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    disk = BackupDisk(target="vda", file="vda.qcow2", format="qcow2", source="/d",
                      source_format="raw", virtual_size=1 << 20, file_size=image.stat().st_size,
                      sha256=backupimg.sha256(image))  # fmt: skip
    made = BackupSet(id="20261204T000000Z-full", vm="test", vm_uuid="u", kind="full",
                     method="backup-api", started=1.0, finished=2.0, disks=[disk],
                     fallback="disk vda is raw", domain_xml="<domain/>",
                     virtkit_version="0")  # fmt: skip
    write_manifest(partial, made)
    publish(partial, root.set_dir("test", made.id))
    page = app.get("/vms/test").text
    assert "20261204T000000Z-full" in page and "full: disk vda is raw" in page
    assert 'data-api-form="POST api/v1/vms/test/backups/20261204T000000Z-full/restore"' in page
    app.post("/api/v1/logout")
    login(app, "vera")
    page = app.get("/vms/test").text
    assert "20261204T000000Z-full" in page
    assert "Back up now" not in page and "Restore to new VM" not in page


def test_the_health_page_shows_findings_and_fix_buttons(app: TestClient) -> None:
    login(app, "ada")
    page = app.get("/health").text
    assert 'data-check="kvm.usable"' in page
    # the test driver's pool has no directory: an error, with its fix and a Fix button
    row = page[page.index('data-check="pool.path"') :].split("</tr>")[0]
    assert 'class="badge bad"' in row and 'data-api="POST api/v1/host/doctor/fix"' in row
    assert '"checks": ["pool.path"]' in row
    vm = app.get("/vms/test/health").text
    assert 'data-check="vm.state"' in vm


def test_a_viewer_sees_health_without_fix_buttons(app: TestClient) -> None:
    login(app, "vera")
    page = app.get("/health")
    assert page.status_code == 200 and 'data-check="pool.path"' in page.text
    assert "doctor/fix" not in page.text


def test_the_hosts_page_lists_hosts_their_vms_and_migrate_forms(
    app: TestClient, tmp_path: Path
) -> None:
    csrf = login(app, "ada")
    assert "No hosts registered" in app.get("/hosts").text
    for name in ("a", "b"):
        node = tmp_path / f"{name}.xml"
        node.write_text(
            f"<node><domain type='test'><name>vkweb-{name}</name>"
            "<memory unit='MiB'>64</memory><os><type>hvm</type></os></domain></node>"
        )
        added = app.post(
            "/api/v1/hosts",
            json={"name": name, "uri": f"test://{node}"},
            headers={"X-CSRF-Token": csrf},
        )
        assert added.status_code == 201, added.text
    page = app.get("/hosts").text
    assert 'data-host="a"' in page and 'data-host="b"' in page
    assert 'data-api-form="POST api/v1/vms/vkweb-a/migrate"' in page
    form = page[page.index('data-api-form="POST api/v1/vms/vkweb-a/migrate"') :].split("</form>")[0]
    assert "<option>b</option>" in form and "<option>a</option>" not in form
    assert 'data-api="POST api/v1/hosts/a/evacuate"' in page
    login(app, "vera")
    viewer = app.get("/hosts").text
    assert 'data-host="a"' in viewer and "migrate" not in viewer and "evacuate" not in viewer
