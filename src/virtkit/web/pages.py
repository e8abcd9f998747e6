"""The web UI's pages: server-rendered from the same service functions the API and the CLI call.

Pages only read. Every change a page offers (a button, a form) is a call of the REST API from
the browser (``static/ui.js``), with the session's CSRF token: no logic lives twice, and the
audit log sees the UI's actions as what they are, API calls. Pages stay current through the
event stream: a region marked ``hx-trigger="vk-vm from:body"`` re-renders itself when a VM
event arrives, so nothing polls.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from virtkit.api.context import ApiContext
from virtkit.errors import NotFound, VirtkitError
from virtkit.services.vmscope import check_owner, restricted, visible
from virtkit.specs.backup import BackupSet
from virtkit.specs.cloudinit import SeedView
from virtkit.specs.common import validate_name
from virtkit.specs.doctor import DoctorReport
from virtkit.specs.network import GuestAddress
from virtkit.specs.snapshot import tree_order
from virtkit.specs.tasks import TaskView
from virtkit.specs.vm import VMSummary
from virtkit.web.render import LoginFirst, Viewer, html, need, page, root_of, viewer

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
T = TypeVar("T")
Who = Annotated[Viewer, Depends(viewer)]

_SAFE_NEXT = re.compile(r"[A-Za-z0-9._~/?&=%+-]*")
STATES = ("running", "paused", "shutoff", "crashed", "pmsuspended", "blocked", "shutdown")


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


class KsmSamples:
    """The memory KSM saves, sampled every ``every`` seconds while the service runs (the
    dashboard's plot); only hosts whose KSM virtkit can read (local ones) have samples."""

    def __init__(self, read: Callable[[], int | None], every: float = 15.0, keep: int = 240):
        self.read = read
        self.every = every
        self.points: deque[tuple[float, int]] = deque(maxlen=keep)
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="virtkit-ksm-samples", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> None:
        try:
            saved = self.read()
        except (VirtkitError, OSError):
            return
        if saved is not None:
            self.points.append((time.time(), saved))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)


def _tasks(ctx: ApiContext, who: Viewer, **query: Any) -> list[TaskView]:
    """Recent tasks the viewer may see (their own only, where VMs are: services/vmscope.py)."""
    if not who.may("task.read"):
        return []
    if restricted(who.role, ctx.settings.api_vm_scope):
        query["user"] = who.user
    return ctx.tasks.list(**query)


def _vm_of(ctx: ApiContext, who: Viewer, name: str) -> None:
    """404 for a VM the viewer may not see, as the API answers."""
    if restricted(who.role, ctx.settings.api_vm_scope):
        check_owner(name, ctx.client.vms.owner(name), who.user)


def _or_else(read: Callable[[], T], default: T) -> tuple[T, str | None]:
    """What ``read`` gives, or ``default`` and the error's message: a page shows what it can
    (a driver without DHCP leases still lists its VMs, without addresses)."""
    try:
        return read(), None
    except VirtkitError as exc:
        log.info("web page: %s (%s)", exc, exc.code)
        return default, exc.message


# -- session -----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "") -> Response:
    try:
        viewer(request)
        return RedirectResponse(root_of(request.url.path), status_code=303)
    except LoginFirst:
        pass
    # Only a relative path inside the UI: never another site, never a javascript: URL.
    target = next if _SAFE_NEXT.fullmatch(next) and not next.startswith("/") else ""
    return page(request, "login.html", None, next=target)


# -- dashboard ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
@html
def dashboard(request: Request, who: Who) -> Response:
    ctx = _ctx(request)
    host, host_error = None, None
    if who.may("host.read"):
        host, host_error = _or_else(ctx.client.hosts.info, None)
    vms = visible(ctx.client.vms.list(), who.user, who.role, ctx.settings.api_vm_scope)
    counts = Counter(v.state.value for v in vms)
    ksm = None
    if who.may("host.read"):
        try:
            ksm = ctx.client.ksm.status()
        except VirtkitError:
            ksm = None
        if ksm is not None and restricted(who.role, ctx.settings.api_vm_scope):
            mine = {v.name for v in vms}  # the host's figures, but only their VMs by name
            ksm = ksm.model_copy(update={"vms": [v for v in ksm.vms if v.name in mine]})
    samples = list(request.app.state.ksm_samples.points)
    tasks = _tasks(ctx, who, limit=8)
    return page(
        request,
        "dashboard.html",
        who,
        host=host,
        host_error=host_error,
        vms=vms,
        counts=counts,
        running_memory=sum(v.memory for v in vms if v.state.value == "running"),
        ksm=ksm,
        ksm_points=[s for _, s in samples],
        ksm_since=samples[0][0] if samples else None,
        tasks=tasks,
    )


# -- VMs ---------------------------------------------------------------------------------------

_SORTS: dict[str, Callable[[VMSummary], Any]] = {
    "name": lambda v: v.name,
    "state": lambda v: (v.state.value, v.name),
    "vcpus": lambda v: (v.vcpus, v.name),
    "memory": lambda v: (v.memory, v.name),
    "uptime": lambda v: (v.uptime or 0.0, v.name),
}


@router.get("/vms", response_class=HTMLResponse)
@html
def vm_list(
    request: Request,
    who: Who,
    q: Annotated[str, Query(max_length=100)] = "",
    state: Annotated[str, Query(max_length=20)] = "",
    sort: Annotated[str, Query(max_length=20)] = "name",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
) -> Response:
    ctx = _ctx(request)
    vms = visible(ctx.client.vms.list(), who.user, who.role, ctx.settings.api_vm_scope)
    if q:
        needle = q.lower()
        vms = [v for v in vms if needle in v.name.lower() or any(needle in t for t in v.tags)]
    if state:
        vms = [v for v in vms if v.state.value == state]
    key = _SORTS.get(sort, _SORTS["name"])
    vms.sort(key=key, reverse=order == "desc")
    running = [v.name for v in vms if v.state.value == "running"]
    addresses: dict[str, list[GuestAddress]] = {}
    if running:
        addresses = _or_else(lambda: ctx.client.nics.addresses(running), addresses)[0]
    return page(
        request,
        "vms.html",
        who,
        vms=vms,
        addresses=addresses,
        q=q,
        state=state,
        states=STATES,
        sort=sort if sort in _SORTS else "name",
        order=order,
    )


@router.get("/vms/{name}", response_class=HTMLResponse)
@html
def vm_detail(request: Request, who: Who, name: str) -> Response:
    validate_name(name)
    ctx = _ctx(request)
    _vm_of(ctx, who, name)
    vm = ctx.client.vms.get(name)
    nics = ctx.client.nics.list(name)
    running = vm.state.value in ("running", "paused")
    addresses: list[GuestAddress] = []
    if running:
        none: dict[str, list[GuestAddress]] = {}
        addresses = _or_else(lambda: ctx.client.nics.addresses([name]), none)[0].get(name, [])
    tasks = _tasks(ctx, who, target=name, limit=10)
    log = ctx.tasks.log_lines(tasks[0].id) if tasks else []
    seed = next((d for d in vm.disks if d.source and d.source.endswith("-seed.iso")), None)
    seed_view: SeedView | None = None
    seed_error = None
    if seed is not None:
        seed_view, seed_error = _or_else(lambda: ctx.client.vms.cloud_init(name), None)
    no_rows: list[dict[str, Any]] = []
    snapshots, snapshot_error = _or_else(lambda: _snapshot_rows(ctx, who, name), no_rows)
    no_sets: list[BackupSet] = []
    backups, backups_error = _or_else(lambda: ctx.client.backups.list(name), no_sets)
    return page(
        request,
        "vm.html",
        who,
        vm=vm,
        snapshots=snapshots,
        snapshot_error=snapshot_error,
        nics=nics,
        addresses=addresses,
        tasks=tasks,
        log=log,
        seed=seed,
        seed_view=seed_view,
        seed_error=seed_error,
        backups=list(reversed(backups)),  # the newest first
        backups_error=backups_error,
        has_vnc=any(g.type == "vnc" for g in vm.graphics),
        has_spice=any(g.type == "spice" for g in vm.graphics),
    )


def _snapshot_rows(ctx: ApiContext, who: Viewer, name: str) -> list[dict[str, Any]]:
    """The VM's snapshots in tree order; for who may revert and delete, what each would
    destroy (or why a delete is refused), for the buttons' confirmations."""
    rows: list[dict[str, Any]] = []
    snaps = ctx.client.snapshots
    for prefix, snap in tree_order(snaps.list(name)):
        row: dict[str, Any] = {"prefix": prefix, "snap": snap}
        if who.may("vm.delete"):
            row["revert"], row["revert_refused"] = _or_else(
                functools.partial(snaps.revert_plan, name, snap.name), None
            )
            row["delete"], row["delete_refused"] = _or_else(
                functools.partial(snaps.delete_plan, name, snap.name), None
            )
        rows.append(row)
    return rows


def _health(request: Request, who: Viewer, report: DoctorReport, fix_url: str) -> Response:
    counts = Counter(f.severity.value for f in report.findings)
    order = {"error": 0, "warning": 1, "info": 2, "ok": 3}
    findings = sorted(report.findings, key=lambda f: order[f.severity.value])
    return page(
        request,
        "health.html",
        who,
        report=report,
        findings=findings,
        counts={k: counts.get(k, 0) for k in order},
        fix_url=fix_url,
    )


@router.get("/health", response_class=HTMLResponse)
@html
def host_health(request: Request, who: Who) -> Response:
    """The doctor's host report, with a Fix button for each fix it can apply."""
    need(who, "host.read")
    report = _ctx(request).client.doctor.host_report()
    return _health(request, who, report, "api/v1/host/doctor/fix")


@router.get("/vms/{name}/health", response_class=HTMLResponse)
@html
def vm_health(request: Request, who: Who, name: str) -> Response:
    """The doctor's report of one VM."""
    validate_name(name)
    ctx = _ctx(request)
    _vm_of(ctx, who, name)
    report = ctx.client.doctor.vm_report(name)
    return _health(request, who, report, f"api/v1/vms/{name}/doctor/fix")


@router.get("/vms/{name}/console", response_class=HTMLResponse)
@html
def console_window(
    request: Request,
    who: Who,
    name: str,
    kind: Annotated[str, Query(pattern="^(vnc|serial)$")] = "vnc",
) -> Response:
    """A console on a page of its own (the 'open in a new window' of the VM page)."""
    validate_name(name)
    need(who, "console")
    _vm_of(_ctx(request), who, name)
    vm = _ctx(request).client.vms.get(name)
    return page(request, "console.html", who, vm=vm, kind=kind)


@router.get("/create", response_class=HTMLResponse)
@html
def create_wizard(request: Request, who: Who) -> Response:
    need(who, "vm.create")
    ctx = _ctx(request)
    images = ctx.client.images.list()
    networks = ctx.client.networks.list() if who.may("network.read") else []
    return page(
        request,
        "create.html",
        who,
        templates=[i for i in images if i.template],
        images=[i for i in images if not i.template],
        networks=[n for n in networks if n.active],
    )


# -- storage, networks, templates --------------------------------------------------------------


@router.get("/storage", response_class=HTMLResponse)
@html
def storage(request: Request, who: Who) -> Response:
    need(who, "storage.read")
    pools = _ctx(request).client.pools
    listing = []
    for pool in pools.list_pools():
        listing.append((pool, pools.list_volumes(pool.name) if pool.active else []))
    return page(request, "storage.html", who, pools=listing)


@router.get("/networks", response_class=HTMLResponse)
@html
def networks(request: Request, who: Who) -> Response:
    need(who, "network.read")
    return page(request, "networks.html", who, networks=_ctx(request).client.networks.list())


@router.get("/hosts", response_class=HTMLResponse)
@html
def hosts(request: Request, who: Who) -> Response:
    need(who, "host.read")
    fleet = _ctx(request).client.fleet
    statuses = fleet.status(timeout=5)
    listed = fleet.vms(timeout=5) if statuses else []
    return page(request, "hosts.html", who, statuses=statuses, listed=listed)


@router.get("/templates", response_class=HTMLResponse)
@html
def templates_page(request: Request, who: Who) -> Response:
    need(who, "storage.read")
    return page(request, "templates.html", who, images=_ctx(request).client.images.list())


# -- tasks -------------------------------------------------------------------------------------


@router.get("/tasks", response_class=HTMLResponse)
@html
def task_list(request: Request, who: Who) -> Response:
    need(who, "task.read")
    return page(request, "tasks.html", who, tasks=_tasks(_ctx(request), who, limit=100))


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
@html
def task_detail(request: Request, who: Who, task_id: str) -> Response:
    need(who, "task.read")
    ctx = _ctx(request)
    task = ctx.tasks.get(task_id)
    if restricted(who.role, ctx.settings.api_vm_scope) and task.user != who.user:
        raise NotFound(f"no task {task_id!r}", code="task_not_found")
    return page(request, "task.html", who, task=task, log=ctx.tasks.log_lines(task_id))


# -- users and audit (admins) ------------------------------------------------------------------


@router.get("/users", response_class=HTMLResponse)
@html
def users(request: Request, who: Who) -> Response:
    need(who, "user.admin")
    service = _ctx(request).client.users
    return page(request, "users.html", who, users=service.list(), tokens=service.tokens(None))


@router.get("/audit", response_class=HTMLResponse)
@html
def audit(
    request: Request,
    who: Who,
    user: Annotated[str, Query(max_length=100)] = "",
    action: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    need(who, "audit.read")
    entries = _ctx(request).client.audit.entries(
        user=user or None, action=action or None, limit=200
    )
    return page(request, "audit.html", who, entries=entries, user=user, action=action)
