"""The cloud-init part of a VM spec: what cloud-init (or cloudbase-init) does at first boot.

The checks are :mod:`virtkit.cloudinit`'s own (keys, user-data, static addressing), run as the
spec comes in; building the seed is the service's step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from virtkit.errors import InvalidInput
from virtkit.specs.common import _Spec, name_rule

UserName = Annotated[str, name_rule("user")]
HostName = Annotated[str, name_rule("host")]


class CloudInitSpec(_Spec):
    """What cloud-init (or cloudbase-init) does at first boot (see docs/cloud-init.md)."""

    user: UserName | None = Field(None, description="A user to create, with sudo.")
    ssh_keys: list[str] = Field(default_factory=list, description="SSH public keys (text).")
    password_hash: str | None = Field(
        None, description="The user's password, hashed (a plain 'password' is hashed on input)."
    )
    hostname: HostName | None = Field(None, description="Default: the VM's name.")
    packages: list[str] = Field(default_factory=list)
    runcmd: list[str] = Field(default_factory=list, description="Commands run at first boot.")
    user_data: str | None = Field(None, description="Your own user-data, merged with the above.")
    network_config: dict[str, Any] | None = Field(None, description="network-config v1 or v2.")
    ip: str | None = Field(None, description="Static address with prefix: 198.18.0.10/24.")
    gateway: str | None = None
    dns: list[str] = Field(default_factory=list)
    seed: Literal["nocloud", "configdrive"] = Field("nocloud", description="Seed format.")
    host_keys: bool = Field(
        True,
        description="virtkit makes the guest's SSH host keys and 'vm ssh' accepts only those; "
        "false: the guest makes its own (cloudbase-init, or a user-data that sets ssh_keys).",
    )

    @model_validator(mode="before")
    @classmethod
    def _hash_password(cls, data: Any) -> Any:
        # the plain password never stays in the spec: hashed as it comes in
        if isinstance(data, dict) and data.get("password") is not None:
            from virtkit.cloudinit import hash_password

            data = dict(data)
            data["password_hash"] = hash_password(str(data.pop("password")))
        return data

    @model_validator(mode="after")
    def _check(self) -> CloudInitSpec:
        from virtkit import cloudinit

        try:
            self.ssh_keys = [cloudinit.check_public_key(k) for k in self.ssh_keys]
            if self.user_data is not None:
                cloudinit.parse_user_data(self.user_data)
            if self.network_config is not None and self.seed == "configdrive":
                raise ValueError(
                    "a ConfigDrive seed carries static addressing from ip; a network_config "
                    "needs seed nocloud"
                )
            if self.ip is not None:
                if self.network_config is not None:
                    raise ValueError("give either ip or network_config, not both")
                cloudinit.static_network(self.ip, self.gateway, self.dns, None)
            elif self.gateway or self.dns:
                raise ValueError("gateway and dns go with a static ip")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return self
