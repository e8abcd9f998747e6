"""Fault injection at the libvirt seam, for faults real parts cannot produce on demand.

``FaultyHost(host, {"define": BackendError("disk full")})`` behaves like ``host`` except that the
named operations raise; operations on the guests it hands out are covered too (e.g. ``"start"``).
Use it in tests only; production code never sees it.
"""

from __future__ import annotations

from typing import Any

from virtkit.backend.guest import Guest
from virtkit.backend.host import Host


class _Faulty:
    def __init__(
        self, target: Any, faults: dict[str, BaseException], calls: list[str] | None = None
    ) -> None:
        self._target = target
        self._faults = faults
        self.calls: list[str] = [] if calls is None else calls  # shared with the guests

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in self._faults:
                raise self._faults[name]
            result = value(*args, **kwargs)
            if isinstance(result, Guest):
                return _Faulty(result, self._faults, self.calls)
            if isinstance(result, list) and result and isinstance(result[0], Guest):
                return [_Faulty(g, self._faults, self.calls) for g in result]
            return result

        return call


def FaultyHost(host: Host, faults: dict[str, BaseException]) -> Host:
    """``host`` with faults (its guests are wrapped too)."""
    return _Faulty(host, faults)  # a Host by delegation (__getattr__)
