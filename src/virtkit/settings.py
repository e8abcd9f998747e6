"""virtkit's one settings object: environment ``VIRTKIT_*`` and an optional TOML file.

Entry points (CLI, API) call :meth:`Settings.load` and pass the result down; core code never reads
the environment. (A plain loader rather than pydantic-settings: it keeps the CLI's start-up fast.)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from virtkit.errors import InvalidInput

ENV_PREFIX = "VIRTKIT_"
DEFAULT_CONFIG = Path("/etc/virtkit/virtkit.toml")


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/virtkit")
    return Path.home() / ".local" / "share" / "virtkit"


def _default_cache_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/cache/virtkit")
    return Path.home() / ".cache" / "virtkit"


class Settings(BaseModel):
    """All of virtkit's configuration (see docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    uri: str = Field("qemu:///system", description="libvirt URI of the host to manage.")
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where virtkit caches verdicts and built images.",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="virtkit's own store (images, templates): what libvirt cannot hold.",
    )
    backup_dir: Path | None = Field(
        None, description="Where backup sets go (default: STATE_DIR/backups); `--to` overrides."
    )
    storage_pool: str = Field("default", description="Pool for new VM disks.")
    storage_pool_path: Path = Field(
        Path("/var/lib/libvirt/images"), description="Directory of the pool, if virtkit creates it."
    )
    console_log_dir: Path = Field(
        Path("/var/log/libvirt/qemu"), description="Where each VM's serial console is logged."
    )
    qemu_log_dir: Path = Field(
        Path("/var/log/libvirt/qemu"),
        description="Where libvirt writes each VM's QEMU log (`doctor vm`, `diag bundle`).",
    )
    kvm_probe_timeout: float = Field(15.0, description="Seconds a KVM test boot may take.")
    kvm_probe_kernel: str | None = Field(None, description="Kernel the KVM probe boots.")
    shutdown_timeout: float = Field(60.0, description="Default seconds to wait for shutdown.")
    log_format: Literal["text", "ecs"] = Field(
        "text",
        description="Logs on stderr: `text` (`INFO: message`) or `ecs`, one ECS JSON document "
        "a line for the ELK stack (docs/monitoring.md); `--log-json` is `ecs` for one run.",
    )
    ksm_root: Path = Field(Path("/sys/kernel/mm/ksm"), description="The kernel's KSM directory.")
    ksm_policy: Literal["adaptive", "ksmtuned", "observe"] = Field(
        "adaptive", description="Policy of `virtkit ksm tune`."
    )
    ksm_cpu_budget: float = Field(
        5.0, gt=0, le=100, description="Share of one core (percent) ksmd may use under `adaptive`."
    )
    ksm_interval: float | None = Field(
        None,
        gt=0,
        description="Seconds between the tuning daemon's decisions (default: 60 for ksmtuned, "
        "as its KSM_MONITOR_INTERVAL; 10 otherwise).",
    )
    ksm_history: Path | None = Field(
        None, description="SQLite file of KSM samples (default: STATE_DIR/ksm-history.sqlite)."
    )
    ksm_history_days: float = Field(30.0, gt=0, description="Days of KSM samples kept.")

    api_listen: str = Field("127.0.0.1", description="Address `virtkit serve` binds.")
    api_port: int = Field(8470, ge=1, le=65535, description="Port of `virtkit serve`.")
    exporter_listen: str = Field(
        "127.0.0.1:9178", description="ADDRESS:PORT `virtkit exporter` serves /metrics on."
    )
    metrics_public: bool = Field(
        False, description="`virtkit serve`'s /metrics answers without a token (for Prometheus)."
    )
    api_max_body: int = Field(
        1024 * 1024, ge=1024, description="Largest request body the API accepts, in bytes."
    )
    api_workers: int = Field(4, ge=1, le=64, description="Tasks the API runs at once.")
    api_vm_scope: Literal["all", "own"] = Field(
        "all",
        description="`own`: callers without the permission `vm.all` (operators, viewers) see "
        "and act on only the VMs they own (made through the API, or given by an admin).",
    )
    ui_assets: Path = Field(
        Path("/var/cache/virtkit/ui"),
        description="The web UI's npm assets (noVNC, xterm.js, htmx): scripts/install-ui.sh.",
    )

    @property
    def backup_path(self) -> Path:
        return self.backup_dir or self.state_dir / "backups"

    @property
    def ksm_history_path(self) -> Path:
        return self.ksm_history or self.state_dir / "ksm-history.sqlite"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then the TOML file, then ``VIRTKIT_*`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        path = Path(env.get(ENV_PREFIX + "CONFIG", DEFAULT_CONFIG))
        values: dict[str, Any] = {}
        if path.is_file():
            try:
                values.update(tomllib.loads(path.read_text()))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InvalidInput(
                    f"cannot read config file {path}: {exc}", code="invalid_config"
                ) from None
        for name in cls.model_fields:
            if (ENV_PREFIX + name.upper()) in env:
                values[name] = env[ENV_PREFIX + name.upper()]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(
                f"invalid settings ({path} or VIRTKIT_*): {problems}", code="invalid_config"
            ) from None
