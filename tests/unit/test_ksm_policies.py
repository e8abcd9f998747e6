"""The ksmtuned policy makes ksmtuned's decisions on recorded readings."""

from __future__ import annotations

import pytest

from virtkit.ksm.policies import KsmtunedConfig, KsmtunedPolicy, Reading

GIB = 1024 * 1024  # kB

# (total, free, committed) in kB -> (run, pages_to_scan, sleep_millisecs), in sequence:
# the policy keeps ksmtuned's npages between calls, as the script's global does.
TRACE = [
    # an idle 24 GiB host: free above 20% and little committed -> stopped
    ((24 * GIB, 23 * GIB, 1 * GIB), (False, None, None)),
    # guests commit most of the memory, free still above the threshold -> start, decay from 0
    ((24 * GIB, 10 * GIB, 20 * GIB), (True, 64, 10)),
    # free memory falls under 20% -> boost by 300
    ((24 * GIB, 3 * GIB, 22 * GIB), (True, 364, 10)),
    ((24 * GIB, 3 * GIB, 22 * GIB), (True, 664, 10)),
    ((24 * GIB, 3 * GIB, 22 * GIB), (True, 964, 10)),
    ((24 * GIB, 3 * GIB, 22 * GIB), (True, 1250, 10)),  # capped at KSM_NPAGES_MAX
    # merging freed memory: free above the threshold again, still committed -> decay by 50
    ((24 * GIB, 6 * GIB, 22 * GIB), (True, 1200, 10)),
    # guests gone -> stop; npages is kept for the next start
    ((24 * GIB, 20 * GIB, 2 * GIB), (False, None, None)),
    # ... and restarts from there: 1200 + 300, capped
    ((24 * GIB, 4 * GIB, 22 * GIB), (True, 1250, 10)),
]


def test_the_ksmtuned_trace() -> None:
    policy = KsmtunedPolicy()
    for (total, free, committed), (run, npages, sleep) in TRACE:
        decision = policy.decide(Reading(total=total, free=free, committed=committed))
        assert (decision.run, decision.pages_to_scan, decision.sleep_millisecs) == (
            run, npages, sleep,
        ), decision.reason  # fmt: skip
        assert decision.reason


@pytest.mark.parametrize(
    ("total", "thres", "sleep"),
    [
        (2 * GIB, 2 * GIB * 20 // 100, 80),  # small host: sleep scaled up (10 ms per 16 GiB)
        (16 * GIB, 16 * GIB * 20 // 100, 10),
        (64 * GIB, 64 * GIB * 20 // 100, 10),  # never under 10 ms
        (8000, 2048, 20971),  # KSM_THRES_CONST when 20% is smaller
    ],
)
def test_thresholds_follow_ksmtuned(total: int, thres: int, sleep: int) -> None:
    assert KsmtunedPolicy().thresholds(total) == (thres, sleep)


def test_config_values_are_used() -> None:
    policy = KsmtunedPolicy(KsmtunedConfig(npages_boost=1000, npages_max=5000, thres_coef=50))
    decision = policy.decide(Reading(total=10 * GIB, free=4 * GIB, committed=8 * GIB))
    assert decision.run and decision.pages_to_scan == 1000
