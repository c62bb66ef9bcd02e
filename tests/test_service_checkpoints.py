"""Verified checkpoints (issue 11, defect 5): a checkpoint carries a checksum over its ``seq`` and
state; a corrupt one (bad checksum, undecodable, none) is skipped for the next older one, else the
whole log is replayed, and the state after start-up equals a clean replay of the log, bit for bit.
A sound checkpoint that does not fit the configured policy still stops start-up, with its own message.

The router runs in-process (the checkpoint logic has no HTTP part); the log is a real SQLite file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

import sqlalchemy as sa

from banditroute.core.validation import InputError
from banditroute.envs.base import EnvSpec
from banditroute.policies.registry import make_policy
from banditroute.service.auth import hash_key
from banditroute.service.config import parse_config
from banditroute.service.learner import replay
from banditroute.service.router import Router
from banditroute.service.storage import (
    CorruptCheckpoint,
    Storage,
    checkpoint_checksum,
    decode_state,
    encode_state,
    verify_checkpoint,
)
from service_support import learn_in_process

DIM = 4
ROWS = 20  # the fixture's log: checkpoints at rows 10, 15 and 20 (the newest three are kept)


def config(tmp_path: Path) -> Any:
    return parse_config(
        {
            "router": {"models": ["a", "b", "c"], "dim": DIM, "checkpoint_every": 5, "keep_checkpoints": 3},
            "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
            "storage": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
            "auth": {"admin_key_hashes": [hash_key("admin")]},
            "ope": {"interval_s": 3600},
        }
    )


@pytest.fixture
def logged(tmp_path: Path) -> Any:
    """A log of ``ROWS`` decisions with feedback, learned and checkpointed by a router that stopped."""
    cfg = config(tmp_path)
    learn_in_process(cfg, ROWS, seed=0)
    # The live learner checkpoints when its queue drains past `checkpoint_every`, which depends on
    # thread timing; rewrite the set as checkpoints at fixed rows, each a clean replay of its prefix.
    execute(cfg, "delete from checkpoints where seq <> :s", s=ROWS)
    store = Storage(cfg.storage.url)
    try:
        for seq in (10, 15):
            store.save_checkpoint(seq, encode_state(replayed(cfg, seq)), 0.0, keep=3)
    finally:
        store.dispose()
    return cfg


def seqs(cfg: Any) -> list[int]:
    """The stored checkpoints' rows, newest first (the newest is ``ROWS``, written at the stop)."""
    found = [int(r.seq) for r in execute(cfg, "select seq from checkpoints order by seq desc")]
    assert found == [ROWS, 15, 10]
    return found


def execute(cfg: Any, sql: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(cfg.storage.url)
    with engine.begin() as conn:
        result = conn.execute(sa.text(sql), params)
        rows = result.all() if result.returns_rows else []
    engine.dispose()
    return rows


def replayed(cfg: Any, rows: int) -> dict[str, Any]:
    """The policy ``state_dict`` of an uninterrupted replay of the log's first ``rows`` rows."""
    spec = EnvSpec(n_arms=cfg.capacity(), dim=DIM, reward_range=cfg.router.reward_range)
    policy = make_policy(cfg.policy.name, spec, **cfg.policy.params)
    store = Storage(cfg.storage.url)
    try:
        prefix = (r for r in store.learn_rows(0) if r.seq <= rows)
        last, pending = replay(policy, prefix, cfg.router.learn_batch)
    finally:
        store.dispose()
    assert (last, pending) == (rows, [])
    return policy.state_dict()


def clean_replay(cfg: Any) -> dict[str, np.ndarray]:
    """The policy state of an uninterrupted replay of the whole log from a fresh policy."""
    return dict(replayed(cfg, ROWS)["state"])


def restart(cfg: Any) -> tuple[int, dict[str, np.ndarray]]:
    """Start a router on the log: the checkpoint row it restored from, and its learned state."""
    router = Router(cfg)
    router.start()
    try:
        used = router.learner.checkpoint_seq
        state = dict(router.learner.policy.state_dict()["state"])
        assert router.learner.applied_seq == ROWS
    finally:
        router.stop()
    return used, state


def assert_same(state: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(state) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=f"state[{key!r}] differs from a clean replay")


def test_checkpoints_store_a_checksum_over_seq_and_state(logged: Any) -> None:
    rows = execute(logged, "select seq, state, checksum from checkpoints order by seq desc")
    assert [r.seq for r in rows] == seqs(logged)
    for r in rows:
        assert r.checksum == checkpoint_checksum(r.seq, bytes(r.state))
        verify_checkpoint(r.seq, bytes(r.state), r.checksum)
        with pytest.raises(CorruptCheckpoint, match="corrupt"):  # the same blob claimed for another row count
            verify_checkpoint(r.seq + 5, bytes(r.state), r.checksum)


def test_a_corrupt_newest_checkpoint_is_skipped_for_the_next_older(
    logged: Any, caplog: pytest.LogCaptureFixture
) -> None:
    older = seqs(logged)[1]
    execute(logged, "update checkpoints set state = :junk where seq = :s", junk=b"not an npz at all", s=ROWS)
    with caplog.at_level(logging.WARNING, logger="banditroute.service"):
        used, state = restart(logged)
    assert used == older
    assert "skipping the checkpoint at row 20: corrupt checkpoint" in caplog.text
    assert_same(state, clean_replay(logged))


def test_a_tampered_but_plausible_checkpoint_is_detected(logged: Any, caplog: pytest.LogCaptureFixture) -> None:
    older = seqs(logged)[1]
    (blob,) = execute(logged, "select state from checkpoints where seq = :s", s=ROWS)[0]
    state = decode_state(bytes(blob))
    key = sorted(state["state"])[0]
    state["state"][key] = np.asarray(state["state"][key]) + 1.0  # still a valid npz of the right shapes
    tampered = encode_state(state)
    decode_state(tampered)  # decodes fine: only the checksum can tell
    execute(logged, "update checkpoints set state = :b where seq = :s", b=tampered, s=ROWS)
    with caplog.at_level(logging.WARNING, logger="banditroute.service"):
        used, learned = restart(logged)
    assert used == older
    assert "does not match its checksum" in caplog.text
    assert_same(learned, clean_replay(logged))


def test_all_checkpoints_corrupt_means_a_full_replay(logged: Any) -> None:
    execute(logged, "update checkpoints set checksum = 'sha256:' || substr(checksum, 8, 63) || 'x'")
    used, state = restart(logged)
    assert used == 0
    assert_same(state, clean_replay(logged))


def test_a_log_from_before_checksums_gains_the_column_and_replays(logged: Any) -> None:
    execute(logged, "alter table checkpoints drop column checksum")  # the old schema
    used, state = restart(logged)  # its checkpoints are unverifiable: skipped, the log replayed
    assert used == 0
    assert_same(state, clean_replay(logged))
    rows = execute(logged, "select seq, state, checksum from checkpoints order by seq desc")
    assert rows[0].seq == ROWS and rows[0].checksum == checkpoint_checksum(ROWS, bytes(rows[0].state))


def test_a_checkpoint_beyond_the_log_is_skipped(logged: Any) -> None:
    store = Storage(logged.storage.url)
    try:
        (blob,) = execute(logged, "select state from checkpoints where seq = :s", s=ROWS)[0]
        store.save_checkpoint(25, bytes(blob), 0.0, keep=10)  # claims rows the log does not hold
    finally:
        store.dispose()
    used, state = restart(logged)
    assert used == ROWS
    assert_same(state, clean_replay(logged))


def test_a_sound_checkpoint_that_does_not_fit_stops_start_up(logged: Any) -> None:
    other = make_policy("linucb", EnvSpec(n_arms=2, dim=DIM + 1), epsilon=0.1)  # another shape of policy
    store = Storage(logged.storage.url)
    try:
        store.save_checkpoint(ROWS, encode_state(other.state_dict()), 0.0, keep=3)  # verifies, decodes
    finally:
        store.dispose()
    with pytest.raises(InputError, match="does not fit this config") as info:
        Router(logged).start()
    assert "corrupt" not in str(info.value)


def test_undecodable_blob_with_a_matching_checksum_is_corrupt() -> None:
    blob = b"PK\x03\x04 truncated zip"
    with pytest.raises(CorruptCheckpoint, match="corrupt checkpoint"):
        verify_checkpoint(5, blob, checkpoint_checksum(5, blob))
    with pytest.raises(CorruptCheckpoint, match="no checksum"):
        verify_checkpoint(5, blob, None)
