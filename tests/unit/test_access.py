"""Small pure pieces of reaching a guest: the console's login prompt, the SSH forward a user-mode
NIC carries, and what a clone changes in it."""

from __future__ import annotations

from virtkit.services.access import _CLOUD_INIT_DONE, _LOGIN
from virtkit.services.domainbuilder import BuildPlan, build_domain, ssh_forward_port
from virtkit.services.nics import _user_nics
from virtkit.services.vmclone import renew_user_nics
from virtkit.specs import parse_vm_spec


def test_console_markers() -> None:
    assert _LOGIN.search("Debian GNU/Linux 12 web1 ttyS0\n\nweb1 login: ")
    assert _LOGIN.search("web1 login: [   30.1] cloud-init[1]: output on the same line")
    assert not _LOGIN.search("booting...\n[    1.0] Run /init as init process\n")
    assert _CLOUD_INIT_DONE.search(
        "[   44.1] cloud-init[501]: Cloud-init v. 22.4.2 finished at Sun, 29 Nov 2026 23:00:00"
    )


def test_user_nic_forward_and_a_clones_new_one() -> None:
    spec = parse_vm_spec(
        {"name": "x", "kernel": "/k", "nics": [{"user": True, "ssh_forward": 2222}]}
    )
    dom = build_domain(
        spec, BuildPlan(domain_type="qemu", machine="q35", macs=["52:54:00:00:00:01"])
    )
    assert ssh_forward_port(dom) == 2222
    [nic] = _user_nics(dom)
    assert (nic.mac, nic.type, nic.source) == (
        "52:54:00:00:00:01",
        "user",
        "user, ssh on 127.0.0.1:2222",
    )
    taken = {"52:54:00:00:00:01"}
    macs = renew_user_nics(dom, taken)
    [renewed] = _user_nics(dom)
    assert macs == [renewed.mac] and renewed.mac != "52:54:00:00:00:01" and renewed.mac in taken
    assert ssh_forward_port(dom) not in (None, 2222)
