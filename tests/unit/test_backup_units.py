"""Backups, pure parts: backup/checkpoint XML (golden and round trip), cron, retention,
the set layout and manifest, the incremental-or-full decision, schedules and timer files."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from virtkit.services.backupcreate import SourceDisk, plan_live
from virtkit.services.backupretention import SetRef, select
from virtkit.services.backupsched import Schedules, is_due, timer_files
from virtkit.services.backupset import BackupRoot, new_set_id, publish, write_manifest
from virtkit.services.store import Store
from virtkit.specs.backup import BackupDisk, BackupSet, Retention, ScheduleSpec
from virtkit.specs.cron import CronError, parse_cron
from virtkit.xml.backup import DomainBackup, DomainCheckpoint, checkpoint, push_backup

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("VIRTKIT_REGENERATE_GOLDEN") == "1"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN or not path.exists():
        path.write_text(text)
    assert text == path.read_text()


# -- XML ----------------------------------------------------------------------------------------


def test_push_backup_xml_golden_and_round_trip() -> None:
    xml = push_backup({"vda": "/b/s/vda.qcow2"}, ["sda"], incremental="virtkit-1").to_xml()
    _golden("backup-push-incremental.xml", xml)
    parsed = DomainBackup.parse(xml)
    assert parsed.incremental == "virtkit-1" and parsed.mode == "push"
    assert [(d.name, d.backup, d.target_file) for d in parsed.disks] == [
        ("vda", "yes", "/b/s/vda.qcow2"), ("sda", "no", None)]  # fmt: skip
    assert DomainBackup.parse(parsed.to_xml()).to_xml() == xml


def test_checkpoint_xml_golden_and_libvirts_answer_survive() -> None:
    xml = checkpoint("virtkit-2", ["vda"], ["sda"], "virtkit backup set 2").to_xml()
    _golden("checkpoint.xml", xml)
    # libvirt's own answer, with what virtkit does not declare (an unknown element)
    answer = (
        "<domaincheckpoint><name>ck2</name><parent><name>ck1</name></parent>"
        "<creationTime>1796417550</creationTime><disks><disk name='vda' checkpoint='bitmap' "
        "bitmap='ck2'/></disks><domain type='qemu'><name>x</name></domain></domaincheckpoint>"
    )
    ck = DomainCheckpoint.parse(answer)
    assert (ck.name, ck.parent, ck.creation_time) == ("ck2", "ck1", 1796417550)
    assert ck.disks[0].bitmap == "ck2"
    ck.description = "d"
    assert '<domain type="qemu">\n    <name>x</name>\n  </domain>' in ck.to_xml()


# -- cron ---------------------------------------------------------------------------------------


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("* * * * *", "2026-12-04T20:51:30", "2026-12-04T20:52"),
        ("30 2 * * *", "2026-12-04T20:51", "2026-12-05T02:30"),
        ("*/15 * * * *", "2026-12-04T20:51", "2026-12-04T21:00"),
        ("0 0 1 * *", "2026-12-04T20:51", "2027-01-01T00:00"),
        ("0 12 * * mon-fri", "2026-12-04T20:51", "2026-12-07T12:00"),  # Fri -> Mon
        ("0 12 * * 7", "2026-12-04T20:51", "2026-12-06T12:00"),  # 7 is Sunday
        ("0 0 13 * fri", "2026-12-04T20:51", "2026-12-11T00:00"),  # day OR weekday
        ("0 0 29 feb *", "2026-12-04T20:51", "2028-02-29T00:00"),
        ("5,10-12/2 1 * jan,JUL *", "2026-12-04T20:51", "2027-01-01T01:05"),
    ],
)
def test_cron_next(expr: str, after: str, expected: str) -> None:
    assert parse_cron(expr).next_after(_t(after)) == _t(expected)


@pytest.mark.parametrize(
    ("expr", "words"),
    [("* * * *", "5 fields"), ("60 * * * *", "out of range"), ("* * * * foo", "not a number"),
     ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"), ("1,,2 * * * *", "empty")],
)  # fmt: skip
def test_cron_errors(expr: str, words: str) -> None:
    with pytest.raises(CronError, match=words):
        parse_cron(expr)
    assert parse_cron("0 0 30 feb *").next_after(_t("2026-01-01T00:00")) is None


def test_cron_due() -> None:
    cron = parse_cron("0 3 * * *")
    assert not cron.due(_t("2026-12-04T03:00"), _t("2026-12-05T02:59"))
    assert cron.due(_t("2026-12-04T03:00"), _t("2026-12-05T03:00"))


# -- retention ----------------------------------------------------------------------------------

DAY = 86400.0
T0 = _t("2026-11-02T01:00").timestamp()  # a Monday


def test_keep_last_keeps_the_chain_of_a_kept_incremental() -> None:
    sets = [SetRef("f1", None, T0), SetRef("i1", "f1", T0 + 1), SetRef("i2", "i1", T0 + 2),
            SetRef("f2", None, T0 + 3), SetRef("i3", "f2", T0 + 4)]  # fmt: skip
    assert select(sets, Retention(keep_last=1)) == (["i3", "f2"], ["i2", "i1", "f1"])
    assert select(sets, Retention(keep_last=3)) == (["i3", "f2", "i2", "i1", "f1"], [])
    assert select(sets, Retention(keep_last=2))[1] == ["i2", "i1", "f1"]


def test_daily_and_weekly() -> None:
    # one full a day for 21 days, two incrementals on each
    sets = []
    for d in range(21):
        base = T0 + d * DAY
        sets += [SetRef(f"f{d}", None, base), SetRef(f"a{d}", f"f{d}", base + 3600),
                 SetRef(f"b{d}", f"a{d}", base + 7200)]  # fmt: skip
    kept, removed = select(sets, Retention(keep_last=1, keep_daily=3, keep_weekly=3))
    # last: b20; daily: b20, b19, b18; weekly (Mon-Sun weeks): b20 (week 3), b13, b6 -> chains
    expected = {f"{k}{d}" for d in (20, 19, 18, 13, 6) for k in "fab"}
    assert set(kept) == expected
    assert len(removed) == 63 - 15
    with pytest.raises(ValueError):
        Retention(keep_last=0)


# -- sets and manifest --------------------------------------------------------------------------


def _set(set_id: str, parent: str | None, started: float) -> BackupSet:
    disk = BackupDisk(target="vda", file="vda.qcow2", format="qcow2", source="/d.qcow2",
                      source_format="qcow2", virtual_size=1 << 20, file_size=4,
                      sha256="00")  # fmt: skip
    return BackupSet(id=set_id, vm="vm1", vm_uuid="u", kind="incremental" if parent else "full",
                     method="backup-api", parent=parent, checkpoint=f"virtkit-{set_id}",
                     started=started, finished=started + 1, disks=[disk], domain_xml="<domain/>",
                     virtkit_version="0")  # fmt: skip


def test_sets_are_whole_or_not_there(tmp_path: Path) -> None:
    root = BackupRoot(tmp_path)
    for set_id, parent, t in (("s1", None, 1.0), ("s2", "s1", 2.0)):
        partial = root.partial_dir("vm1", set_id)
        partial.mkdir(parents=True)
        (partial / "vda.qcow2").write_bytes(b"data")
        write_manifest(partial, _set(set_id, parent, t))
        assert root.sets("vm1") == [] or set_id == "s2"  # a partial set is no set
        publish(partial, root.set_dir("vm1", set_id))
    assert [s.id for s in root.sets("vm1")] == ["s1", "s2"]
    assert [s.id for s in root.chain("vm1", "s2")] == ["s1", "s2"]
    assert root.at("vm1", 1.5).id == "s1" and root.latest("vm1").id == "s2"  # type: ignore[union-attr]
    assert root.get("vm1", "s2").path == str(tmp_path / "vm1" / "s2")
    root.remove("vm1", "s1")
    with pytest.raises(Exception, match="is gone"):
        root.chain("vm1", "s2")
    assert new_set_id("full", 0.0, set()) == "19700101T000000Z-full"
    assert new_set_id("incremental", 0.0, {"19700101T000000Z-inc"}) == "19700101T000000Z-inc2"


def test_incremental_or_full_and_why() -> None:
    disks = [SourceDisk("vda", "/d", "qcow2", 1 << 20)]
    last = _set("s1", None, 1.0).model_copy(update={"vm_uuid": "u"})

    def plan(**kw: object) -> object:
        args: dict = {"disks": disks, "latest": last, "chain_whole": True, "uuid": "u",
                      "checkpoint_exists": lambda ck: True, "full": False}  # fmt: skip
        args.update(kw)
        return plan_live(**args)

    assert plan().kind == "incremental"  # type: ignore[attr-defined]
    assert "no previous" in plan(latest=None).fallback  # type: ignore[attr-defined]
    assert "another VM" in plan(uuid="x").fallback  # type: ignore[attr-defined]
    assert "gone from libvirt" in plan(checkpoint_exists=lambda ck: False).fallback  # type: ignore[attr-defined]
    assert "broken" in plan(chain_whole=False).fallback  # type: ignore[attr-defined]
    grown = [SourceDisk("vda", "/d", "qcow2", 2 << 20)]
    assert "disks changed" in plan(disks=grown).fallback  # type: ignore[attr-defined]
    raw = plan(disks=[SourceDisk("vda", "/d", "raw", 1)])
    assert "raw" in raw.fallback and not raw.checkpoint  # type: ignore[attr-defined]
    asked = plan(full=True)
    assert asked.kind == "full" and asked.fallback is None  # type: ignore[attr-defined]


# -- schedules ----------------------------------------------------------------------------------


def test_schedules_in_the_store(tmp_path: Path) -> None:
    schedules = Schedules(Store(tmp_path / "v.db"), "host-1")
    spec = ScheduleSpec(tag="prod", cron="0  3 * * *", retention=Retention(keep_daily=7))
    view = schedules.add(spec, now=_t("2026-12-04T12:00").timestamp())
    assert view.cron == "0 3 * * *" and view.retention.keep_daily == 7
    assert not is_due(view, _t("2026-12-05T02:59").timestamp())
    assert is_due(view, _t("2026-12-05T03:00").timestamp())
    schedules.mark_run(view.id, _t("2026-12-05T03:00").timestamp(), "ok")
    assert not is_due(schedules.get(view.id), _t("2026-12-05T04:00").timestamp())
    assert Schedules(Store(tmp_path / "v.db"), "host-2").list() == []
    schedules.remove(view.id)
    assert schedules.list() == []
    with pytest.raises(ValueError, match="5 fields"):
        ScheduleSpec(vm="a", cron="* *")
    with pytest.raises(Exception, match="exactly one"):
        schedules.add(ScheduleSpec(cron="* * * * *"))


def test_timer_files() -> None:
    cron = timer_files("cron", "/usr/bin/virtkit", {"VIRTKIT_URI": "qemu:///system"})
    assert cron["virtkit-backup"].splitlines()[1:] == [
        "VIRTKIT_URI=qemu:///system",
        "* * * * * root /usr/bin/virtkit backup run-due >/dev/null 2>&1",
    ]
    units = timer_files("systemd", "/usr/bin/virtkit")
    assert "ExecStart=/usr/bin/virtkit backup run-due" in units["virtkit-backup.service"]
    assert "OnCalendar=*-*-* *:*:00" in units["virtkit-backup.timer"]
