"""What a task of each kind leaves when its process dies mid-way, and how it is removed.

In-process, a failed create undoes itself (``Transaction``). A process that is killed cannot, so
the next service start (``TaskRunner.recover``) calls these: the task's ``recovery`` record names
what it was making, and the names virtkit derives from it (``vmfiles``) find the rest.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import shutil
from pathlib import Path
from typing import Any

from virtkit.errors import NotFound, VirtkitError
from virtkit.services import vmfiles
from virtkit.services.pools import PoolService
from virtkit.services.tasks import TaskRunner
from virtkit.services.vms import VMService
from virtkit.specs.tasks import TaskView

log = logging.getLogger(__name__)


def register(runner: TaskRunner, vms: VMService, pools: PoolService) -> None:
    def new_vm(task: TaskView, recovery: dict[str, Any]) -> None:
        remove_new_vm(vms, pools, str(recovery["vm"]))

    def new_volume(task: TaskView, recovery: dict[str, Any]) -> None:
        with contextlib.suppress(NotFound):
            pools.delete_volume(str(recovery["pool"]), str(recovery["volume"]))

    def new_build(task: TaskView, recovery: dict[str, Any]) -> None:
        new_volume(task, recovery)
        remove_build_dir(Path(str(recovery["build_dir"])))

    runner.on_recover("vm.create", new_vm)
    runner.on_recover("vm.clone", new_vm)

    def restored_vm(task: TaskView, recovery: dict[str, Any]) -> None:
        if recovery.get("vm"):  # a restore into a new VM (one into the VM itself makes none)
            new_vm(task, recovery)

    runner.on_recover("backup.restore", restored_vm)
    runner.on_recover("image.import", new_volume)
    runner.on_recover("volume.clone", new_volume)
    runner.on_recover("image.build", new_build)


def remove_build_dir(build_dir: Path) -> None:
    """What a cut-off ``image build`` left in the cache: its directory (the kernel) and the
    work directory beside it (``imagebuild.build_debian`` makes ``.NAME.*`` there)."""
    shutil.rmtree(build_dir, ignore_errors=True)
    for work in build_dir.parent.glob(f".{glob.escape(build_dir.name)}.*"):
        shutil.rmtree(work, ignore_errors=True)


def remove_new_vm(vms: VMService, pools: PoolService, name: str) -> list[str]:
    """A VM whose create (or clone) was cut off: the domain if it got defined, with the disks
    virtkit made for it, and volumes named for it that no domain uses. (The create refuses a
    name that exists, so a domain of that name was made by the cut-off task.)"""
    removed: list[str] = []
    with contextlib.suppress(NotFound):
        result = vms.delete(name, force=True, remove_storage=True)
        removed += [name, *result.removed]
    pool = vms.files.pool
    try:
        volumes = {v.name: v for v in pools.list_volumes(pool)}
    except VirtkitError as exc:
        log.warning("cannot list pool %s to clean up after %s: %s", pool, name, exc)
        return removed
    own = {vmfiles.seed_volume(name)} | {
        n for n in volumes if n.startswith(f"{name}-disk") and n.endswith(".qcow2")
    }
    for volume in sorted(own & set(volumes)):
        if volumes[volume].used_by:
            continue
        with contextlib.suppress(NotFound):
            pools.delete_volume(pool, volume)
            removed.append(volumes[volume].path)
    return removed
