"""Site files (issue 18): bad files name file, line and reason; replicas and digests; plan,
apply, drift and rollback of pools and networks on libvirt's test driver (a per-test
``test:///FILE`` node; VMs need QEMU: tests/integration/test_site.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from virtkit import Client, Settings
from virtkit.errors import InvalidInput, InvalidState
from virtkit.services.siteplan import decode_parts, encode_parts, spec_parts, wanted
from virtkit.specs import parse_vm_spec
from virtkit.specs.site import Site

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))
NODE = "<node><network><name>vkst-other</name><bridge name='vkstbr9'/></network></node>"


def problems(text: str) -> str:
    with pytest.raises(InvalidInput) as err:
        Client(settings=Settings(uri="test:///default")).sites.parse(text, "site.yaml")
    assert err.value.code == "invalid_site"
    return err.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: lab\nvms:\n  - name: a\n    colour: blue\n",
         "site.yaml:4: vms[0].colour: unknown key 'colour'"),
        ("site: lab\nvms:\n  - name: a\n  - name: b\n  - name: a\n",
         "site.yaml:5: vms[2].name: VM 'a' is declared twice (entries 1 and 3)"),
        ("site: lab\nvms:\n  - name: a\n    depends_on: [b]\n  - name: b\n    depends_on: [a]\n",
         "site.yaml:4: vms[0].depends_on: a dependency cycle: a -> b -> a"),
        ("site: lab\nhosts:\n  - {name: h1, uri: 'test:///default'}\nvms:\n  - name: a\n"
         "    host: h2\n", "site.yaml:6: vms[0].host: no host named 'h2' in this site (hosts: h1)"),
        ("site: lab\nvms:\n  - name: web\n    replicas: 3\n",
         "site.yaml:3: vms[0]: 3 replicas need {n} in the name"),
        ("site: lab\nvms:\n  - name: a\n    memory: lots\n",
         "site.yaml:4: vms[0].memory: not a size: 'lots'"),
        ("site: lab\nsite: lab2\n", "site.yaml:2: site: the key 'site' is given twice"),
        ("site: lab\nvms: [\n", "site.yaml:3: not valid YAML"),
        ("site: lab\npools:\n  - {name: p, path: /a}\n  - {name: p, path: /b}\n",
         "site.yaml:4: pools[1].name: pool 'p' twice on host default"),
        ("site: lab\nvms:\n  - name: a\n    depends_on: [nobody]\n",
         "site.yaml:4: vms[0].depends_on[0]: no VM named 'nobody' in this site"),
    ],
)  # fmt: skip
def test_bad_site_files_name_file_line_and_reason(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_every_problem_is_reported_at_once() -> None:
    message = problems(
        "site: lab\npools:\n  - {name: p, path: /a}\n  - {name: p, path: /b}\nvms:\n"
        "  - name: a\n    host: elsewhere\n"
    )
    assert message.startswith("2 problem(s) in site.yaml:")
    assert "site.yaml:4:" in message and "site.yaml:7:" in message


def test_replicas_spread_over_hosts_and_depend() -> None:
    site = Site.model_validate(
        {
            "site": "lab",
            "hosts": [{"name": "a", "uri": "test:///default"}, {"name": "b", "uri": "x"}],
            "networks": [{"name": "n1", "kind": "isolated", "host": "a"}],
            "vms": [
                {"name": "web-{n}", "replicas": 3, "hosts": ["a", "b"],
                 "nics": [{"network": "n1"}], "memory": "256M"},
                {"name": "db", "host": "a", "depends_on": ["web-{n}"]},
            ],
        }
    )  # fmt: skip
    wants = {w.name: w for w in wanted(site)}
    assert [(w.name, w.host) for w in wanted(site) if w.kind == "vm"] == [
        ("web-1", "a"), ("web-2", "b"), ("web-3", "a"), ("db", "a")
    ]  # fmt: skip
    assert ("network", "n1", "a") in wants["web-1"].after
    assert ("network", "n1", "a") not in wants["web-2"].after  # n1 is on host a only
    assert {k for k in wants["db"].after if k[0] == "vm"} == {
        ("vm", "web-1", "a"), ("vm", "web-2", "b"), ("vm", "web-3", "a")
    }  # fmt: skip
    assert wants["web-2"].spec.memory == 256 * 1024 * 1024  # bytes stay bytes


def test_spec_digests_tell_which_part_changed() -> None:
    base = {"name": "a", "memory": "256M", "kernel": "/k", "nics": [{"network": "n"}]}
    parts = spec_parts(parse_vm_spec(base))
    assert decode_parts(encode_parts(parts)) == parts
    changed = {
        "memory": {**base, "memory": "512M"},
        "nics": {**base, "nics": [{"network": "n"}, {"network": "m"}]},
        "disks": {**base, "disks": [{"size": "1G"}]},
        "kernel": {**base, "kernel": "/other"},
        "tags": {**base, "tags": ["x"]},
    }
    which = {k: {p for p, v in spec_parts(parse_vm_spec(d)).items() if parts[p] != v}
             for k, d in changed.items()}  # fmt: skip
    assert which == {"memory": {"s"}, "nics": {"n"}, "disks": {"d"}, "kernel": {"r"},
                     "tags": set()}  # fmt: skip


@pytest.fixture
def vk(tmp_path: Path) -> Client:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return Client(
        settings=Settings(
            uri=f"test://{node}", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state"
        )
    )


def site_of(tmp_path: Path, pools: list[str], networks: list[str]) -> Site:
    return Site.model_validate(
        {
            "site": "lab",
            "pools": [{"name": p, "path": str(tmp_path / p)} for p in pools],
            "networks": [{"name": n, "kind": "isolated"} for n in networks],
        }
    )


def test_apply_is_idempotent_and_prune_deletes_only_this_sites(vk: Client, tmp_path: Path) -> None:
    site = site_of(tmp_path, ["vkst-p1", "vkst-p2"], ["vkst-n1"])
    plan = vk.sites.plan(site)
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [
        ("create", "pool", "vkst-p1"), ("create", "pool", "vkst-p2"),
        ("create", "network", "vkst-n1"),
    ]  # fmt: skip
    assert [(u.kind, u.name) for u in plan.unmanaged] == [("network", "vkst-other")]
    _plan, result = vk.sites.apply(site)
    assert result.ok and len(result.steps) == 3
    again = vk.sites.plan(site)
    assert again.empty, again
    assert vk.sites.apply(site)[1].steps == []
    # the file drops p2: a plan says so; only --prune deletes it, and never vkst-other
    smaller = site_of(tmp_path, ["vkst-p1"], ["vkst-n1"])
    plain = vk.sites.plan(smaller)
    assert plain.empty and plain.pruned == 1
    pruning = vk.sites.plan(smaller, prune=True)
    assert [(c.action, c.name) for c in pruning.changes] == [("delete", "vkst-p2")]
    assert vk.sites.apply(smaller, prune=True)[1].ok
    names = vk.host.storage.pool_names()
    assert "vkst-p2" not in names and "vkst-p1" in names
    assert "vkst-other" in vk.host.networks.names()


def test_a_failure_rolls_back_what_this_apply_made(vk: Client, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    site = Site.model_validate(
        {
            "site": "lab",
            "pools": [
                {"name": "vkst-p1", "path": str(tmp_path / "vkst-p1")},
                {"name": "vkst-p2", "path": str(tmp_path / "vkst-p2")},
                {"name": "vkst-p3", "path": str(tmp_path / "a-file")},  # a file: refused
            ],
        }
    )
    events: list[tuple[str, str]] = []
    _plan, result = vk.sites.apply(
        site, parallel=1, progress=lambda c, status, _m: events.append((c.name, status))
    )
    assert not result.ok
    assert events[:4] == [("vkst-p1", "start"), ("vkst-p1", "done"), ("vkst-p2", "start"),
                          ("vkst-p2", "done")]  # fmt: skip
    assert ("vkst-p3", "failed") in events
    assert result.rolled_back == ["pool vkst-p2 on default", "pool vkst-p1 on default"]
    assert not {"vkst-p1", "vkst-p2", "vkst-p3"} & set(vk.host.storage.pool_names())
    assert vk.sites.plan(site_of(tmp_path, [], [])).pruned == 0  # no marks left behind


def test_conflicts_and_drift(vk: Client, tmp_path: Path) -> None:
    site = Site.model_validate({"site": "lab", "networks": [{"name": "vkst-other",
                                                            "kind": "isolated"}]})  # fmt: skip
    plan = vk.sites.plan(site)
    assert [(c.action, c.details) for c in plan.changes] == [
        ("conflict", ["exists, managed by no site: rename it in the file, or remove the "
                      "network first"])
    ]  # fmt: skip
    with pytest.raises(InvalidState) as err:
        vk.sites.apply(site)
    assert err.value.code == "site_conflict"
    mine = site_of(tmp_path, ["vkst-p1"], ["vkst-n1"])
    assert vk.sites.apply(mine)[1].ok
    assert vk.sites.drift(mine) == []
    vk.networks.stop("vkst-n1")
    drift = vk.sites.drift(mine)
    assert [(d.name, d.field, d.want, d.have) for d in drift] == [
        ("vkst-n1", "active", "True", "False")
    ]
    update = vk.sites.plan(mine)
    assert [(c.action, c.details) for c in update.changes] == [
        ("update", ["start (it is stopped)"])
    ]


def test_cli_site_check_and_schema(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VIRTKIT_CONFIG": "/nonexistent",
        "VIRTKIT_STATE_DIR": str(tmp_path / "s"),
        "VIRTKIT_CACHE_DIR": str(tmp_path / "c"),
    }
    bad = tmp_path / "site.yaml"
    bad.write_text("site: lab\nvms:\n  - name: a\n    host: nowhere\n")
    done = subprocess.run([VIRTKIT, "site", "check", "-f", str(bad)], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    assert f"{bad}:4: vms[0].host: no host named 'nowhere'" in done.stderr
    schema = subprocess.run([VIRTKIT, "site", "schema"], env=env, capture_output=True, text=True)
    doc = json.loads(schema.stdout)
    assert set(doc["properties"]) == {"site", "hosts", "pools", "networks", "templates", "vms"}


def test_two_hosts_each_get_their_own(tmp_path: Path) -> None:
    uris = {}
    for host in ("a", "b"):
        node = tmp_path / f"node-{host}.xml"
        node.write_text("<node></node>")
        uris[host] = f"test://{node}"
    site = Site.model_validate(
        {
            "site": "lab",
            "hosts": [{"name": h, "uri": u} for h, u in uris.items()],
            "networks": [{"name": "vkst-na", "kind": "isolated", "host": "a"},
                         {"name": "vkst-nb", "kind": "isolated", "host": "b"}],
        }
    )  # fmt: skip
    settings = Settings(uri=uris["a"], cache_dir=tmp_path / "c", state_dir=tmp_path / "s")
    with Client(settings=settings) as vk:
        plan = vk.sites.plan(site)
        assert [(c.name, c.host) for c in plan.changes] == [("vkst-na", "a"), ("vkst-nb", "b")]
        assert vk.sites.apply(site)[1].ok
        assert vk.host.networks.names() == ["vkst-na"]
        other = vk._site_hosts(site)["b"]
        assert other.uri == uris["b"] and other.networks.host.networks.names() == ["vkst-nb"]
        assert vk.sites.plan(site).empty


def test_a_replace_is_refused_until_allowed(vk: Client, tmp_path: Path) -> None:
    def with_address(address: str | None) -> Site:
        net: dict[str, object] = {"name": "vkst-n1", "kind": "isolated"}
        if address:
            net["ipv4"] = address
        return Site.model_validate({"site": "lab", "networks": [net]})

    assert vk.sites.apply(with_address(None))[1].ok
    changed = with_address("198.18.7.1/24")
    plan = vk.sites.plan(changed)
    assert [(c.action, c.name) for c in plan.changes] == [("replace", "vkst-n1")]
    assert plan.changes[0].destroys
    with pytest.raises(InvalidState) as err:
        vk.sites.apply(changed)
    assert err.value.code == "site_replace_refused"
    assert "--allow-replace" in err.value.message
    assert vk.sites.plan(changed).changes[0].action == "replace"  # nothing changed
    assert vk.sites.apply(changed, allow_replace=True)[1].ok
    assert vk.sites.plan(changed).empty
