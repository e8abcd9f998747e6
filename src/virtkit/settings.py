"""virtkit's one settings object: environment ``VIRTKIT_*`` and an optional TOML file.

Entry points (CLI, API) read it and pass it down; core code never reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _default_cache_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/cache/virtkit")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "virtkit"


def _config_file() -> Path:
    return Path(os.environ.get("VIRTKIT_CONFIG", "/etc/virtkit/virtkit.toml"))


class Settings(BaseSettings):
    """All of virtkit's configuration (see docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix="VIRTKIT_", extra="ignore")

    uri: str = Field("qemu:///system", description="libvirt URI of the host to manage.")
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where virtkit caches verdicts and built images.",
    )
    storage_pool: str = Field("default", description="Pool for new VM disks.")
    storage_pool_path: Path = Field(
        Path("/var/lib/libvirt/images"), description="Directory of the pool, if virtkit creates it."
    )
    console_log_dir: Path = Field(
        Path("/var/log/libvirt/qemu"), description="Where each VM's serial console is logged."
    )
    kvm_probe_timeout: float = Field(15.0, description="Seconds a KVM test boot may take.")
    kvm_probe_kernel: str | None = Field(None, description="Kernel the KVM probe boots.")
    shutdown_timeout: float = Field(60.0, description="Default seconds to wait for shutdown.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[Any] = [init_settings, env_settings]
        path = _config_file()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)
