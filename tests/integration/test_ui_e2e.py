"""The web UI end to end: a real browser (Debian's chromium, driven by Playwright) against a
running ``virtkit serve`` on the private test libvirtd, with a real tiny guest.

Log in by keyboard; create the tiny guest from the wizard; watch it boot in the noVNC console
(its kernel writes to tty0 too, so the screen has text); type into the serial console and see
the guest answer; pause and resume (the page follows through the event stream); a reused
console ticket is refused; the pages fit 375 px; delete from the page, saying what goes.

Screenshots go to the test's directory; with ``VIRTKIT_UPDATE_SCREENSHOTS=1`` also to
``docs/img/`` (what the README shows).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import PREFIX, Bed, wait_for_text
from tests.integration.apiserver import PASSWORD, Server, running

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
NAME = PREFIX + "ui-"

# Share of the VNC canvas's sampled pixels that are not black: text on the screen.
_LIT_PIXELS = """() => {
  const c = document.querySelector('#vnc-screen canvas');
  if (!c || !c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, seen = 0;
  for (let i = 0; i < d.length; i += 4 * 7) { seen++; if (d[i] + d[i + 1] + d[i + 2] > 150) lit++; }
  return lit / seen;
}"""

# In the page: one ticket, two connections; what happened to each.
_REUSE_TICKET = """async (vm) => {
  const { data } = await window.virtkit.api(
    'POST', `api/v1/vms/${vm}/console/ticket`, { kind: 'serial' });
  const url = new URL('api/v1/' + data.path, document.baseURI);
  url.protocol = 'ws:';
  const attempt = () => new Promise((resolve) => {
    const ws = new WebSocket(url.href, ['binary']);
    let opened = false;
    ws.onopen = () => { opened = true; ws.close(1000); };
    ws.onclose = (e) => resolve({ opened, code: e.code });
  });
  const first = await attempt();
  const second = await attempt();
  return { first, second };
}"""


@pytest.fixture(scope="module")
def api(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from virtkit.services import storage

    with bed.client() as vk:
        storage.ensure_pool(vk.host, bed.settings.storage_pool, bed.pool_dir)
    with running(bed, tmp_path_factory.mktemp("vkui-state")) as server:
        server.add_user("ada", "admin")
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: scripts/install-deps.sh installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("VIRTKIT_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / name)


def _remove(bed: Bed, name: str) -> None:
    with bed.client() as vk:
        if vk.host.exists(name):
            vk.vms.delete(name, force=True, remove_storage=True)


def test_the_ui_from_login_to_delete(
    api: Server, bed: Bed, browser: Browser, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    name = NAME + secrets.token_hex(3)
    net = NAME + "net" + secrets.token_hex(2)
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        # Nothing without a session: the UI sends the browser to the login page.
        page.goto(f"{api.url}/vms")
        expect(page).to_have_url(f"{api.url}/login?next=vms")
        page.keyboard.type("ada")  # the user field has the focus
        page.keyboard.press("Tab")
        page.keyboard.type("not the password")
        page.keyboard.press("Enter")
        expect(page.locator("#login-error")).to_contain_text("password")
        page.fill("input[name=password]", PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{api.url}/vms")

        # The wizard: a direct kernel boot of the tiny guest, VNC display, no disk, no network.
        page.goto(f"{api.url}/create")
        page.fill("input[name=name]", name)
        page.fill("input[name=memory]", "128M")
        page.check("input[name=source][value=kernel]")
        page.fill("input[name=kernel]", bed.guest.kernel)
        page.fill("input[name=initrd]", bed.guest.initrd)
        # tty0 first, ttyS0 last: the kernel writes to the screen, the shell runs on serial.
        page.fill("input[name=cmdline]", "console=tty0 console=ttyS0")
        page.fill("input[name=disk_size]", "")
        page.select_option("select[name=network]", "")
        page.select_option("select[name=graphics]", "vnc")
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{api.url}/vms/{name}", timeout=120_000)
        expect(page.locator("#vm-state")).to_have_text("running")

        # noVNC: connected with the one-time password, and the boot's text is on the screen.
        expect(page.locator("#vnc-status")).to_have_attribute(
            "data-state", "connected", timeout=30_000
        )
        page.wait_for_function(f"({_LIT_PIXELS})() > 0.005", timeout=60_000)
        page.locator("#h-console").scroll_into_view_if_needed()
        page.mouse.wheel(0, 400)
        page.wait_for_timeout(300)
        _shot(page, tmp_path, "console.png")

        # The serial console: the guest's shell answers what is typed.
        page.click("#tab-serial")
        expect(page.locator("#serial-status")).to_have_attribute(
            "data-state", "connected", timeout=20_000
        )
        # Keys reach the shell only once it runs (the screen shows text earlier, while the
        # kernel boots): wait for the guest's boot marker, and type again if a key was lost.
        wait_for_text(bed, name)
        page.click("#serial-term")
        for attempt in range(3):
            page.keyboard.type("echo vk-$((6*7))\n")
            try:
                page.wait_for_function(
                    "window.virtkitConsole.serialText().includes('vk-42')", timeout=15_000
                )
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise

        # Pause and resume: the state on the page comes from the event stream.
        page.click("button:has-text('Pause')")
        expect(page.locator("#vm-state")).to_have_text("paused", timeout=20_000)
        page.click("button:has-text('Resume')")
        expect(page.locator("#vm-state")).to_have_text("running", timeout=20_000)

        # A console ticket opens one connection; used again, it is refused.
        reuse = page.evaluate(_REUSE_TICKET, name)
        assert reuse["first"]["opened"], reuse
        assert not reuse["second"]["opened"], reuse

        # The list: the VM with its state; the dashboard counts it.
        page.goto(f"{api.url}/vms?q={name}")
        row = page.locator(f"tr[data-vm='{name}']")
        expect(row).to_contain_text("running")
        page.goto(f"{api.url}/")
        expect(page.locator("#h-vms")).to_be_visible()
        _shot(page, tmp_path, "dashboard.png")

        # 375 px wide: no page is wider than the screen (tables scroll inside their box).
        narrow = context.new_page()
        narrow.set_viewport_size({"width": 375, "height": 740})
        for path in ("", "vms", f"vms/{name}", "create", "tasks", "users", "networks", "storage",
                     "health", f"vms/{name}/health"):  # fmt: skip
            narrow.goto(f"{api.url}/{path}")
            width = narrow.evaluate("document.documentElement.scrollWidth")
            assert width <= 376, f"/{path} is {width} px wide at 375"
        narrow.close()

        # An admin's forms: a network made on the networks page (defined, not started: no
        # bridge appears on this machine), then deleted there after the confirmation.
        page.goto(f"{api.url}/networks")
        form = page.locator("form[aria-label='New network']")
        form.locator("input[name=name]").fill(net)
        form.locator("select[name=kind]").select_option("isolated")
        form.locator("input[name=ipv4]").fill("198.18.77.1/24")
        form.locator("input[name=start]").uncheck()
        form.locator("button[type=submit]").click()
        row = page.locator("tr", has_text=net)
        expect(row).to_contain_text("inactive", timeout=15_000)
        page.once("dialog", lambda d: d.accept())
        row.locator("button:has-text('Delete')").click()
        expect(page.locator("tr", has_text=net)).to_have_count(0, timeout=15_000)

        # Delete from the page: the dialog names what goes (here its serial log); then it is gone.
        with api.client("ada") as c:
            owned = c.get(f"/api/v1/vms/{name}/delete-preview").json()
        assert owned and all(Path(p).exists() for p in owned), owned
        page.goto(f"{api.url}/vms/{name}")
        page.click("button:has-text('Delete')")
        dialog = page.locator("#delete-dialog")
        for path in owned:
            expect(dialog).to_contain_text(path)
        dialog.locator("input[name=remove_storage]").check()
        dialog.locator("button[value=delete]").click()
        expect(page).to_have_url(f"{api.url}/vms", timeout=30_000)
        with api.client("ada") as c:
            assert c.get(f"/api/v1/vms/{name}").status_code == 404
        assert not [p for p in owned if Path(p).exists()]
        assert not problems, problems
    finally:
        context.close()
        _remove(bed, name)
        with bed.client() as vk:
            if net in [n.name for n in vk.networks.list()]:
                vk.networks.delete(net)
