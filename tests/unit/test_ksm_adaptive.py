"""The adaptive policy on recorded traces: it engages when merging pays, scans fast while profit
grows, slows down when it stalls, keeps ksmd within its CPU budget, backs off when pages are
volatile, and turns KSM off when nothing merges."""

from __future__ import annotations

from dataclasses import replace

from virtkit.ksm.policies import LEVELS, MIB, AdaptiveConfig, AdaptivePolicy, Sample

GIB_KB = 1024 * 1024
IDLE = Sample(time=0.0, mem_total=24 * GIB_KB, mem_free=23 * GIB_KB, guests=4)
TOP = len(LEVELS) - 1


def speed(level: int | None) -> tuple[bool, int | None, int | None]:
    if level is None:
        return (False, None, None)
    return (True, *LEVELS[level])


def run_trace(
    policy: AdaptivePolicy, trace: list[tuple[dict[str, float], int | None, str]]
) -> None:
    """Each row: the sample's fields, the level expected after it (None: KSM off), and a word
    the reason must contain."""
    for fields, level, word in trace:
        decision = policy.step(replace(IDLE, **fields))  # type: ignore[arg-type]
        got = (decision.run, decision.pages_to_scan, decision.sleep_millisecs)
        assert got == speed(level), (fields, decision.reason)
        assert word in decision.reason, decision.reason


def test_engages_on_the_estimate_converges_then_drops_to_the_slowest_scan() -> None:
    estimates = iter([500 * MIB, 900 * MIB])
    policy = AdaptivePolicy(estimator=lambda: next(estimates))
    run_trace(
        policy,
        [
            ({"time": 0}, TOP, "estimate finds 500 MiB"),
            # the first pass only takes checksums: no growth yet, and that says nothing
            ({"time": 1, "full_scans": 0, "ksmd_cpu": 0.9}, TOP, "first pass"),
            ({"time": 2, "full_scans": 1, "profit": 180 * MIB, "ksmd_cpu": 1.8}, TOP, "grew"),
            ({"time": 3, "full_scans": 3, "profit": 500 * MIB, "ksmd_cpu": 2.2}, TOP, "grew"),
            # two full scans and nothing more: everything is merged
            ({"time": 4, "full_scans": 5, "profit": 500 * MIB, "ksmd_cpu": 2.4}, 0, "two full"),
            ({"time": 14, "full_scans": 6, "profit": 500 * MIB, "ksmd_cpu": 2.5}, 0, "steady"),
            # five minutes on, a new estimate finds 400 MiB more (guests changed memory)
            ({"time": 304, "full_scans": 9, "profit": 500 * MIB, "ksmd_cpu": 3}, TOP, "400 MiB"),
        ],
    )


def test_raises_scanning_while_profit_grows_and_lowers_it_when_it_stalls() -> None:
    # no estimate (not root, say); memory short: on at a middle speed
    policy = AdaptivePolicy(estimator=lambda: None)
    short = 3 * GIB_KB
    run_trace(
        policy,
        [
            ({"time": 0, "mem_free": short}, 2, "free memory"),
            ({"time": 10, "mem_free": short, "profit": 40 * MIB, "full_scans": 1}, 3, "grew"),
            ({"time": 20, "mem_free": short, "profit": 90 * MIB, "full_scans": 2}, 4, "grew"),
            ({"time": 30, "mem_free": short, "profit": 95 * MIB, "full_scans": 3}, 4, "grew"),
            # growth under 1 MiB a sample after one more scan: one level down
            ({"time": 40, "mem_free": short, "profit": 95 * MIB, "full_scans": 4}, 3, "only"),
            (
                {"time": 50, "mem_free": short, "profit": 95 * MIB + MIB // 2, "full_scans": 4},
                2,
                "only",
            ),
            ({"time": 60, "mem_free": short, "profit": 99 * MIB, "full_scans": 4}, 3, "grew"),
        ],
    )


def test_keeps_ksmd_within_its_cpu_budget() -> None:
    policy = AdaptivePolicy(
        AdaptiveConfig(cpu_budget=0.05, budget_window=100), estimator=lambda: 400 * MIB
    )
    # ksmd takes a whole core and scans 100 000 pages a second (10 us a page) while profit
    # keeps growing: the 5 CPU-s banked (5% of 100 s) last about 5 s, then the speed drops to
    # the fastest level 5% of a core pays for: 5000 pages/s (100 pages every 20 ms)
    assert policy.step(replace(IDLE, time=0)).pages_to_scan == LEVELS[TOP][0]
    levels = []
    for t in range(1, 9):
        decision = policy.step(
            replace(
                IDLE, time=t, ksmd_cpu=t * 1.0, pages_scanned=t * 100_000,
                profit=t * 10 * MIB, full_scans=t,
            )
        )  # fmt: skip
        levels.append((decision.pages_to_scan, decision.sleep_millisecs))
        if policy.credit <= 0:
            assert "budget" in decision.reason, decision.reason
            break
    assert levels[0] == LEVELS[TOP] and levels[-1] == LEVELS[1]
    assert len(levels) == 6  # 5 s of banked budget, then the cut
    # at that speed ksmd uses its 5%; the bank stays empty and growth does not raise the speed
    after = policy.step(
        replace(IDLE, time=10, ksmd_cpu=6.2, pages_scanned=620_000, profit=90 * MIB, full_scans=9)
    )
    assert (after.pages_to_scan, after.sleep_millisecs) == LEVELS[1], after.reason


def test_backs_off_when_pages_are_too_volatile_to_merge() -> None:
    policy = AdaptivePolicy(estimator=lambda: 100 * MIB)
    run_trace(
        policy,
        [
            ({"time": 0}, TOP, "estimate"),
            ({"time": 1, "full_scans": 1, "profit": 10 * MIB}, TOP, "grew"),
            # no growth, and three times more pages change between scans than are shared
            ({"time": 2, "full_scans": 2, "profit": 10 * MIB, "pages_volatile": 30000,
              "pages_sharing": 10000}, TOP - 1, "volatile"),
            ({"time": 3, "full_scans": 2, "profit": 10 * MIB, "pages_volatile": 30000,
              "pages_sharing": 10000}, TOP - 2, "volatile"),
        ],
    )  # fmt: skip


def test_stays_off_when_nothing_is_worth_merging_and_turns_off_when_nothing_merges() -> None:
    estimates = iter([8 * MIB, 64 * MIB, 0])
    policy = AdaptivePolicy(AdaptiveConfig(estimate_every=60), estimator=lambda: next(estimates))
    run_trace(
        policy,
        [
            ({"time": 0}, None, "nothing worth merging (estimate 8 MiB"),
            ({"time": 10}, None, "nothing worth merging"),  # no new estimate before 60 s
            # a new guest appears: estimated again at once
            ({"time": 20, "guests": 5}, TOP, "64 MiB"),
            ({"time": 21, "guests": 5, "full_scans": 2}, 0, "two full scans"),
            ({"time": 90, "guests": 5, "full_scans": 3}, None, "nothing merges"),
        ],
    )
