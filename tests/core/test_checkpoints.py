"""Checkpoint storage, settings and the named errors of bad checkpoint input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sage_core import (
    CheckpointDirError,
    CheckpointNotFound,
    LocalEnvironment,
    RestartStrategyError,
)
from sage_core.checkpoint import CheckpointStore, RestartStrategy
from sage_core.checkpoint.keyed import (
    KEY_GROUPS,
    key_group,
    restore_groups,
    snapshot_groups,
)
from sage_core.checkpoint.storage import dumps
from sage_core.compiler.plan import PlanFormatError


def test_a_checkpoint_exists_only_with_its_manifest_and_old_ones_are_pruned(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(str(tmp_path), "job", retained=2)
    store.check()
    for epoch in (1, 2, 3):
        store.write(epoch, {"a#0": dumps({"n": epoch}), "b#0": dumps(None)}, {})
    (tmp_path / "job" / "chk-000004").mkdir()  # cut short: no manifest
    cp = store.latest()
    assert cp is not None and cp.epoch == 3
    assert store.epochs() == [2, 3, 4]
    assert store.load(cp, "a#0") == {"n": 3}
    manifest = json.loads(
        (tmp_path / "job" / "chk-000003" / "MANIFEST.json").read_text()
    )
    assert set(manifest["replicas"]) == {"a#0", "b#0"}


def test_a_corrupt_checkpoint_is_skipped_for_the_previous_one_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(str(tmp_path), "job", retained=3)
    store.write(1, {"a#0": b"one"}, {})
    store.write(2, {"a#0": b"two"}, {})
    (tmp_path / "job" / "chk-000002" / "r0000.pkl").write_bytes(b"tampered")
    with caplog.at_level(logging.WARNING, logger="sage_core.checkpoint.storage"):
        cp = store.latest()
    assert cp is not None and cp.epoch == 1
    assert "checkpoint 2" in caplog.text and "corrupt" in caplog.text


@pytest.mark.parametrize("where", ["nosuchprotocol://bucket/x", "FILE"])
def test_an_unusable_checkpoint_dir_fails_at_submit(tmp_path: Path, where: str) -> None:
    if where == "FILE":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        where = str(blocker)
    env = LocalEnvironment("j", checkpoint_interval_s=1.0, checkpoint_dir=where)
    env.from_collection([1, 2]).sink("collect")
    with pytest.raises(CheckpointDirError, match="checkpoint_dir"):
        env.submit()


def test_resuming_a_job_without_checkpoints_is_a_named_error(tmp_path: Path) -> None:
    env = LocalEnvironment("j", checkpoint_dir=str(tmp_path))
    env.from_collection([1, 2]).sink("collect")
    with pytest.raises(CheckpointNotFound, match="no-such-job"):
        env.execute(resume="no-such-job")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("checkpoint_interval_s", 0),
        ("checkpoint_interval_s", "soon"),
        ("checkpoints_retained", 0),
        ("restart", "fixed(3)"),
        ("restart", "always"),
        ("replace_wait_s", -1),
        ("replace_wait_s", "forever"),
    ],
)
def test_bad_recovery_settings_are_named(setting: str, value: object) -> None:
    with pytest.raises(
        PlanFormatError, match=setting if setting != "restart" else "restart"
    ):
        LocalEnvironment("j", **{setting: value})


def test_restart_strategies_parse_and_give_delays() -> None:
    assert RestartStrategy.parse("none").delay(1) is None
    fixed = RestartStrategy.parse("fixed(2, 0.5)")
    assert [fixed.delay(i) for i in (1, 2, 3)] == [0.5, 0.5, None]
    exp = RestartStrategy.parse("exponential(0.1, 0.3, 4)")
    assert [exp.delay(i) for i in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.3, 0.3, None]
    with pytest.raises(RestartStrategyError):
        RestartStrategy.parse("fixed(a, b)")


def test_keyed_state_snapshots_by_key_group_and_restores_a_subset() -> None:
    values = {f"k{i}": i for i in range(500)}
    groups = snapshot_groups(values)
    assert all(0 <= g < KEY_GROUPS for g in groups)
    assert all(key_group(k) == g for g, keys in groups.items() for k in keys)
    target: dict[str, int] = {}
    restore_groups(target, groups, lambda k: int(k[1:]) % 2 == 0)
    assert target == {k: v for k, v in values.items() if v % 2 == 0}
