"""numpy and matplotlib are extras: a missing one is an ``Unsupported`` error naming the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from virtkit.errors import Unsupported
from virtkit.extras import require
from virtkit.ksm.history import KsmHistory
from virtkit.ksm.policies import Sample
from virtkit.ksm.report import plot


def test_a_present_extra_is_imported() -> None:
    assert require("numpy", "the KSM estimate").__name__ == "numpy"


def test_a_missing_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now raises ImportError
    with pytest.raises(Unsupported, match=r"pip install 'virtkit\[estimate\]'") as info:
        require("numpy", "the KSM estimate")
    assert info.value.code == "missing_extra"


def test_the_chart_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    history = KsmHistory(tmp_path / "h.sqlite")
    history.add(Sample(time=1.0, profit=1 << 20))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(Unsupported, match=r"the KSM chart needs matplotlib.*virtkit\[plots\]"):
        plot(history.points(), [], tmp_path / "k.png")
    history.close()
