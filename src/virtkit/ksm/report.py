"""``virtkit ksm report --plot``: memory saved, pages sharing and ksmd CPU over time (matplotlib,
PNG or SVG by the file's extension), for the host and each VM."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

from virtkit.errors import InvalidInput, NotFound
from virtkit.extras import require
from virtkit.specs import KsmHistoryPoint, KsmHistoryVMPoint

FORMATS = {".png": "png", ".svg": "svg"}


def plot(points: list[KsmHistoryPoint], vm_points: list[KsmHistoryVMPoint], target: Path) -> None:
    fmt = FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"the chart is written as PNG or SVG: {target.name!r} ends in neither .png nor .svg",
            code="invalid_plot_format",
        )
    if not points:
        raise NotFound(
            "no KSM samples to draw: run 'virtkit ksm tune' first (--policy observe only records)",
            code="ksm_history_empty",
        )
    if not target.parent.is_dir():
        raise NotFound(f"directory {target.parent} does not exist", code="path_missing")
    require("matplotlib", "the KSM chart").use("Agg")  # an extra, imported when used
    from matplotlib import pyplot as plt

    times = [dt.datetime.fromtimestamp(p.time) for p in points]
    fig, (saved, sharing, cpu) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    try:
        saved.plot(times, [p.saved / 2**20 for p in points], label="host", linewidth=2)
        per_vm: dict[str, list[KsmHistoryVMPoint]] = defaultdict(list)
        for vp in vm_points:
            per_vm[vp.name].append(vp)
        for name, series in sorted(per_vm.items()):
            saved.plot([dt.datetime.fromtimestamp(p.time) for p in series],
                       [p.saved / 2**20 for p in series], label=name, linewidth=1)  # fmt: skip
        saved.set_ylabel("memory saved (MiB)")
        saved.legend(loc="upper left", fontsize="small")
        saved.set_title("KSM")
        sharing.plot(times, [p.pages_sharing for p in points], label="pages sharing")
        sharing.plot(times, [p.pages_volatile for p in points], label="pages volatile")
        sharing.set_ylabel("pages")
        sharing.legend(loc="upper left", fontsize="small")
        cpu.plot(times, [100 * (p.ksmd_cpu_share or 0.0) for p in points], label="ksmd")
        cpu.set_ylabel("ksmd CPU (% of a core)")
        cpu.set_xlabel("time")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(target, format=fmt)
    finally:
        plt.close(fig)
