"""KSM samples over time, in SQLite: what ``virtkit ksm history`` shows and ``report`` draws.

The tuning daemon adds one row per sample (host figures) and one per running VM; rows older than
the retention are pruned. One file per host (the daemon runs on the host).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from virtkit.ksm.policies import Sample
from virtkit.specs import KsmHistoryPoint, KsmHistoryVMPoint

SCHEMA = """
CREATE TABLE IF NOT EXISTS ksm_samples (
    time REAL PRIMARY KEY, run TEXT, pages_to_scan INTEGER, sleep_millisecs INTEGER,
    profit INTEGER, pages_shared INTEGER, pages_sharing INTEGER, pages_volatile INTEGER,
    full_scans INTEGER, ksmd_cpu REAL, mem_total INTEGER, mem_free INTEGER, committed INTEGER,
    guests INTEGER
);
CREATE TABLE IF NOT EXISTS ksm_vm_samples (
    time REAL, name TEXT, merging_pages INTEGER, profit INTEGER, PRIMARY KEY (time, name)
);
"""


class KsmHistory:
    def __init__(self, path: Path, keep_days: float = 30.0) -> None:
        self.path = path
        self.keep = keep_days * 86400
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.executescript(SCHEMA)
        self._pruned = 0.0

    def close(self) -> None:
        self.db.close()

    def add(self, s: Sample) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO ksm_samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (s.time, s.run, s.pages_to_scan, s.sleep_millisecs, s.profit, s.pages_shared,
                 s.pages_sharing, s.pages_volatile, s.full_scans, s.ksmd_cpu, s.mem_total,
                 s.mem_free, s.committed, s.guests),
            )  # fmt: skip
            self.db.executemany(
                "INSERT OR REPLACE INTO ksm_vm_samples VALUES (?,?,?,?)",
                [(s.time, name, merging, profit) for name, (merging, profit) in s.vms.items()],
            )

    def prune(self, now: float | None = None) -> None:
        """Drop samples older than the retention (at most once a minute)."""
        now = time.time() if now is None else now
        if now - self._pruned < 60:
            return
        self._pruned = now
        with self.db:
            self.db.execute("DELETE FROM ksm_samples WHERE time < ?", (now - self.keep,))
            self.db.execute("DELETE FROM ksm_vm_samples WHERE time < ?", (now - self.keep,))

    def points(self, since: float | None = None) -> list[KsmHistoryPoint]:
        rows = self.db.execute(
            "SELECT time, run, pages_to_scan, sleep_millisecs, profit, pages_sharing, "
            "pages_volatile, full_scans, ksmd_cpu FROM ksm_samples WHERE time >= ? ORDER BY time",
            (since or 0.0,),
        ).fetchall()
        points = []
        previous: tuple[float, float] | None = None
        for t, run, pts, sleep, profit, sharing, volatile, scans, cpu in rows:
            share = None
            if previous is not None and t > previous[0] and cpu >= previous[1]:
                share = (cpu - previous[1]) / (t - previous[0])
            previous = (t, cpu)
            points.append(
                KsmHistoryPoint(
                    time=t, run=run, pages_to_scan=pts, sleep_millisecs=sleep, saved=profit,
                    pages_sharing=sharing, pages_volatile=volatile, full_scans=scans,
                    ksmd_cpu_seconds=cpu, ksmd_cpu_share=share,
                )
            )  # fmt: skip
        return points

    def vm_points(
        self, since: float | None = None, names: list[str] | None = None
    ) -> list[KsmHistoryVMPoint]:
        rows = self.db.execute(
            "SELECT time, name, merging_pages, profit FROM ksm_vm_samples WHERE time >= ? "
            "ORDER BY name, time",
            (since or 0.0,),
        ).fetchall()
        return [
            KsmHistoryVMPoint(time=t, name=n, merging_pages=m, saved=p)
            for t, n, m, p in rows
            if not names or n in names
        ]
