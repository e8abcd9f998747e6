"""Carrying out a plan (``virtkit apply``): in dependency order (pools, networks and templates
before the VMs that use them; ``depends_on``), independent steps side by side, each reported
as it starts and ends. When a step fails no new step starts, the running ones finish, and
what this apply created is removed again, newest first: a failed apply leaves the site as it
found it, except for changes in place and deletions already made (which it reports).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from virtkit.errors import VirtkitError
from virtkit.services.siteplan import Step, encode_parts
from virtkit.services.sitestate import SiteHost
from virtkit.specs import NetworkSpec, NicSpec, PoolSpec, VMSpec
from virtkit.specs.site import ApplyResult, Change, SiteTemplate, StepResult

log = logging.getLogger(__name__)

# (the change, "start" | "done" | "failed" | "undone", a message)
Progress = Callable[[Change, str, str], None]
Undo = tuple[str, Callable[[], None]]


class Applier:
    def __init__(
        self,
        site: str,
        hosts: dict[str, SiteHost],
        steps: list[Step],
        *,
        parallel: int = 4,
        progress: Progress | None = None,
    ) -> None:
        self.site = site
        self.hosts = hosts
        self.steps = steps
        self.parallel = max(1, parallel)
        self.progress = progress or (lambda change, status, message: None)
        self._undo: list[Undo] = []
        self._lock = threading.Lock()

    # -- order ------------------------------------------------------------------------------

    def _waits_for(self) -> dict[int, set[int]]:
        """Step index -> indexes of the steps it waits for."""
        index = {step.key: i for i, step in enumerate(self.steps)}
        deletes_of_vms = {
            i
            for i, s in enumerate(self.steps)
            if s.change.kind == "vm" and s.change.action == "delete"
        }
        waits: dict[int, set[int]] = {i: set() for i in range(len(self.steps))}
        for i, step in enumerate(self.steps):
            if step.want is not None:
                waits[i] |= {index[k] for k in step.want.after if k in index}
            if step.change.action == "delete" and step.change.kind != "vm":
                waits[i] |= deletes_of_vms  # a network or pool goes after the VMs that used it
        return waits

    # -- running ----------------------------------------------------------------------------

    def run(self) -> ApplyResult:
        started = time.monotonic()
        waits = self._waits_for()
        done: set[int] = set()
        results: list[StepResult] = []
        failed = False
        running: dict[Future[StepResult], int] = {}
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            pending = set(range(len(self.steps)))
            while pending or running:
                if not failed:
                    for i in sorted(pending):
                        if waits[i] <= done and len(running) < self.parallel:
                            pending.discard(i)
                            running[pool.submit(self._one, self.steps[i])] = i
                if not running:
                    break  # a failure: what still waits never starts
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    result = future.result()
                    results.append(result)
                    if result.ok:
                        done.add(i)
                    else:
                        failed = True
        rolled_back = self._roll_back() if failed else []
        return ApplyResult(
            site=self.site,
            steps=results,
            rolled_back=rolled_back,
            ok=not failed,
            seconds=round(time.monotonic() - started, 3),
        )

    def _one(self, step: Step) -> StepResult:
        change = step.change
        self.progress(change, "start", "")
        began = time.monotonic()
        try:
            message = self._do(step)
        except VirtkitError as exc:
            self.progress(change, "failed", exc.message)
            return self._result(step, False, began, exc.message)
        except Exception as exc:  # a bug: reported as a failure, and rolled back like one
            log.exception("apply: %s %s %s failed", change.action, change.kind, change.name)
            self.progress(change, "failed", repr(exc))
            return self._result(step, False, began, repr(exc))
        self.progress(change, "done", message)
        return self._result(step, True, began, message)

    @staticmethod
    def _result(step: Step, ok: bool, began: float, message: str) -> StepResult:
        c = step.change
        return StepResult(
            kind=c.kind,
            name=c.name,
            host=c.host,
            action=c.action,
            ok=ok,
            seconds=round(time.monotonic() - began, 3),
            message=message,
        )

    def _undo_later(self, what: str, fn: Callable[[], None]) -> None:
        with self._lock:
            self._undo.append((what, fn))

    def _roll_back(self) -> list[str]:
        undone = []
        for what, fn in reversed(self._undo):
            try:
                fn()
                undone.append(what)
            except VirtkitError as exc:
                log.error("apply: could not undo %s: %s", what, exc.message)
                undone.append(f"{what} (FAILED: {exc.message})")
        self._undo.clear()
        return undone

    # -- the steps --------------------------------------------------------------------------

    def _do(self, step: Step) -> str:
        c = step.change
        host = self.hosts[c.host]
        handler = getattr(self, f"_{c.action}_{c.kind}")
        return str(handler(host, step))

    def _create_pool(self, host: SiteHost, step: Step) -> str:
        assert step.want is not None
        spec = PoolSpec.model_validate(step.want.spec.model_dump(exclude={"host"}))
        made_dir = (
            spec.type == "dir"
            and spec.path is not None
            and host.pools.host.is_local
            and not os.path.exists(spec.path)
        )
        host.pools.create_pool(spec)
        host.marks.mark("pool", spec.name, self.site)

        def undo() -> None:
            host.pools.delete_pool(spec.name, delete_dir=made_dir)
            host.marks.forget("pool", spec.name)

        self._undo_later(f"pool {spec.name} on {host.name}", undo)
        return f"created ({spec.type}{f' at {spec.path}' if spec.path else ''})"

    def _update_pool(self, host: SiteHost, step: Step) -> str:
        pools = host.pools
        return _start_and_autostart(step, pools.start_pool, pools.set_pool_autostart)

    def _delete_pool(self, host: SiteHost, step: Step) -> str:
        host.pools.delete_pool(step.change.name)
        host.marks.forget("pool", step.change.name)
        return "deleted (its directory and any files in it stay)"

    def _replace_pool(self, host: SiteHost, step: Step) -> str:
        self._delete_pool(host, step)
        return "replaced: " + self._create_pool(host, step)

    def _create_network(self, host: SiteHost, step: Step) -> str:
        assert step.want is not None
        spec = NetworkSpec.model_validate(step.want.spec.model_dump(exclude={"host"}))
        host.networks.create(spec)
        host.marks.mark("network", spec.name, self.site)

        def undo() -> None:
            host.networks.delete(spec.name)
            host.marks.forget("network", spec.name)

        self._undo_later(f"network {spec.name} on {host.name}", undo)
        return f"created ({spec.kind})"

    def _update_network(self, host: SiteHost, step: Step) -> str:
        nets = host.networks
        return _start_and_autostart(step, nets.start, nets.set_autostart)

    def _delete_network(self, host: SiteHost, step: Step) -> str:
        host.networks.delete(step.change.name)
        host.marks.forget("network", step.change.name)
        return "deleted"

    def _replace_network(self, host: SiteHost, step: Step) -> str:
        self._delete_network(host, step)
        return "replaced: " + self._create_network(host, step)

    def _create_template(self, host: SiteHost, step: Step) -> str:
        assert step.want is not None
        spec: SiteTemplate = step.want.spec
        pool = spec.pool or host.storage_pool
        if spec.import_path:
            host.images.import_image(spec.import_path, pool, spec.name)
            host.images.set_template(pool, spec.name)
        else:
            host.images.build(spec.name, pool)
        key = f"{pool}/{spec.name}"
        host.marks.mark("template", key, self.site)

        def undo() -> None:
            host.pools.delete_volume(pool, spec.name)
            host.marks.forget("template", key)

        self._undo_later(f"template {key} on {host.name}", undo)
        return f"made in pool {pool}"

    def _delete_template(self, host: SiteHost, step: Step) -> str:
        pool, _, name = step.change.name.rpartition("/")
        host.pools.delete_volume(pool or host.storage_pool, name)
        host.marks.forget("template", step.change.name)
        return "deleted"

    def _create_vm(self, host: SiteHost, step: Step) -> str:
        assert step.want is not None
        spec: VMSpec = step.want.spec
        start = step.want.state == "running"
        host.vms.create(spec, start=start)

        def undo() -> None:
            host.vms.delete(spec.name, force=True, remove_storage=True)

        self._undo_later(f"VM {spec.name} on {host.name}", undo)
        host.vms.set_site(spec.name, self.site, encode_parts(step.parts))
        return "created" + (" and started" if start else "")

    def _update_vm(self, host: SiteHost, step: Step) -> str:
        name = step.change.name
        lines: list[str] = []
        actions = step.actions
        if any(what == "shutdown" for what, _ in actions):
            lines.append(host.vms.shutdown(name, timeout=60, force=True))
        sizes = {k: v for k, v in actions if k in ("vcpus", "memory", "max_vcpus")}
        if sizes:
            lines += host.vms.set(name, **sizes).changes
        for what, value in actions:
            if what == "tags":
                host.vms.set_tags(name, value)
                lines.append(f"tags: {', '.join(value) or '-'}")
            elif what == "autostart":
                host.vms.set_autostart(name, bool(value))
                lines.append(f"autostart {'on' if value else 'off'}")
            elif what == "nic_add":
                lines.append(self._add_nic(host, name, value))
            elif what == "nic_remove":
                host.nics.remove(name, value)
                lines.append(f"NIC {value} removed")
            elif what == "disk_add":
                view = host.disks.attach(name, size=value.size, bus=value.bus)
                lines.append(f"disk {view.target} attached")
        if any(what == "start" for what, _ in actions):
            host.vms.start(name)
            lines.append("started")
        if any(what == "record" for what, _ in actions):
            host.vms.set_site(name, self.site, encode_parts(step.parts))
        return "; ".join(str(line) for line in lines) or "recorded"

    @staticmethod
    def _add_nic(host: SiteHost, name: str, nic: NicSpec) -> str:
        info = host.nics.add(
            name,
            network=nic.network,
            bridge=nic.bridge,
            direct=nic.direct,
            mode=nic.mode,
            mac=nic.mac,
            model=nic.model,
        )
        return f"NIC {info.mac} on {info.source} added"

    def _delete_vm(self, host: SiteHost, step: Step) -> str:
        result = host.vms.delete(step.change.name, force=True, remove_storage=True)
        return "deleted" + (f"; removed {', '.join(result.removed)}" if result.removed else "")

    def _replace_vm(self, host: SiteHost, step: Step) -> str:
        self._delete_vm(host, step)
        return "replaced: " + self._create_vm(host, step)


def _start_and_autostart(
    step: Step, start: Callable[[str], None], set_autostart: Callable[[str, bool], None]
) -> str:
    """A pool's or network's update: start it, and set its autostart flag."""
    name = step.change.name
    for what, value in step.actions:
        if what == "start":
            start(name)
        elif what == "autostart":
            set_autostart(name, bool(value))
    return "; ".join(step.change.details)
