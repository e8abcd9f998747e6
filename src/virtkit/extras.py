"""Optional dependencies: numpy (the KSM estimate), matplotlib (the KSM chart) and argon2-cffi
(users and passwords, with the API) are extras.

``require("numpy", "estimate", "the KSM estimate")`` imports a module on first use, or raises
``Unsupported`` naming the extra to install, instead of an ImportError deep in a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from virtkit.errors import Unsupported

# module -> the extra of pyproject.toml that installs it
EXTRAS = {"numpy": "estimate", "matplotlib": "plots", "argon2": "api"}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module.split(".")[0]]
        raise Unsupported(
            f"{feature} needs {module.split('.')[0]}, an optional dependency: "
            f"pip install 'virtkit[{extra}]'",
            code="missing_extra",
        ) from None
