"""The service's parts without HTTP: config, keys, checkpoint encoding, learner replay, the ``ope`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

import sqlalchemy as sa
from typer.testing import CliRunner

from banditroute.cli.main import app
from banditroute.core.types import EnvSpec
from banditroute.core.validation import InputError
from banditroute.policies.registry import make_policy
from banditroute.service.auth import Forbidden, KeyChecker, Role, Unauthorized, hash_key, new_key
from banditroute.service.config import load_config, parse_config
from banditroute.service.dialects import dialect_for
from banditroute.service.learner import replay
from banditroute.service.router import Router
from banditroute.service.storage import Storage, StorageUnavailable, decode_state, encode_state
from service_support import learn_in_process

ADMIN = hash_key("admin")


def config(tmp_path: Path, **router: object) -> dict[str, object]:
    return {
        "router": {"models": ["a", "b", "c"], "dim": 4, **router},
        "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
        "storage": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
        "auth": {"admin_key_hashes": [ADMIN]},
        "ope": {"interval_s": 3600},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"router": {"models": [], "dim": 4}}, "at least one model"),
        ({"router": {"models": ["a", "a"], "dim": 4}}, "unique"),
        ({"router": {"models": ["a"]}}, "router.dim"),
        ({"router": {"models": ["a"], "dim": 0}}, "router.dim"),
        ({"router": {"models": ["a"], "dim": 4, "reward_range": [1, 0]}}, "low < high"),
        ({"router": {"models": ["a", "b"], "dim": 4, "max_models": 1}}, "max_models"),
        ({"router": {"models": ["a"], "dim": 4, "learn_batch": 0}}, "learn_batch"),
        ({"router": {"models": ["a"], "dim": 4, "typo": 1}}, "typo"),
        ({"auth": {"admin_key_hashes": ["md5:abc"]}}, "sha256"),
        ({"auth": {"admin_key_hashes": []}}, "admin_key_hashes"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_config(config(tmp_path) | change)


def _retrieval(*arms: dict[str, object]) -> dict[str, object]:
    return {
        "router": {},
        "embedder": {"factory": "service_support:FakeEmbedder"},
        "retrieval": {"corpus": "c.jsonl", "arms": list(arms)},
    }


BM25 = {"name": "bm25", "retriever": {"factory": "bm25"}}


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ({"name": "x"}, "exactly one of 'retriever' and 'pipeline'"),
        ({"name": "x", "retriever": {"factory": "bm25"}, "pipeline": "rrf(a,b)"}, "exactly one"),
        ({"name": "x", "pipeline": "cvx(bm25)"}, "at least two distinct"),
        ({"name": "x", "pipeline": "mix(a,b)"}, "unknown pipeline"),
    ],
)
def test_bad_pipeline_arms_name_the_problem(tmp_path: Path, arm: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_config(config(tmp_path) | _retrieval(BM25, arm))


def test_a_pipeline_must_name_declared_arms(tmp_path: Path) -> None:
    from banditroute.service.components import build_arms

    cfg = parse_config(config(tmp_path) | _retrieval(BM25, {"name": "h", "pipeline": "rrf(bm25,dense)"}))
    assert cfg.retrieval is not None
    with pytest.raises(InputError, match=r"no retriever named \['dense'\]"):
        build_arms(cfg.retrieval.arms, ["a text", "another text"])


def test_config_files_resolve_relative_paths(tmp_path: Path) -> None:
    toml = '[router]\nmodels = ["a"]\ndim = 3\n[storage]\nurl = "sqlite:///logs/r.db"\n'
    (tmp_path / "router.toml").write_text(toml + f'[auth]\nadmin_key_hashes = ["{ADMIN}"]\n')
    cfg = load_config(tmp_path / "router.toml")
    assert cfg.storage.url == f"sqlite:///{tmp_path.resolve()}/logs/r.db"
    assert cfg.capacity() == 5
    (tmp_path / "bad.toml").write_text("[router\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_keys_are_hashed_and_roles_checked() -> None:
    client_key, admin_key = new_key(), new_key()
    assert client_key != admin_key and len(client_key) >= 40
    checker = KeyChecker([hash_key(client_key)], [hash_key(admin_key)])
    assert checker.require({"authorization": f"Bearer {client_key}"}, Role.CLIENT) is Role.CLIENT
    assert checker.require({"x-api-key": admin_key}, Role.ADMIN) is Role.ADMIN
    with pytest.raises(Unauthorized):
        checker.require({}, Role.CLIENT)
    with pytest.raises(Unauthorized):
        checker.require({"authorization": "Basic abc"}, Role.CLIENT)
    with pytest.raises(Forbidden):
        checker.require({"x-api-key": "guess"}, Role.CLIENT)
    with pytest.raises(Forbidden, match="admin"):
        checker.require({"x-api-key": client_key}, Role.ADMIN)


def test_checkpoints_round_trip_and_corruption_is_caught(tmp_path: Path) -> None:
    cfg = parse_config(config(tmp_path))
    router = Router(cfg)
    router.start()
    try:
        policy = router.new_policy()
        state = policy.state_dict()
        back = decode_state(encode_state(state))
        assert back["policy"] == state["policy"]
        for k, v in state["state"].items():
            np.testing.assert_array_equal(back["state"][k], v)
        with pytest.raises(InputError, match="corrupted"):
            decode_state(encode_state(state)[:100])
    finally:
        router.stop()


def test_feedback_on_recent_decisions_skips_the_log_read_and_keeps_its_rules(tmp_path: Path) -> None:
    """Feedback on a decision this process just logged is answered from memory (no read of the decision
    row); a duplicate, an unknown id and a decision past the TTL behave exactly as when read from the log."""
    from banditroute.service.router import Gone, NotFound

    router = Router(parse_config(config(tmp_path, feedback_ttl_s=0.3)))
    router.start()
    reads: list[int] = []
    log_read = router.storage.feedback_state

    def counting(event_id: int):  # type: ignore[no-untyped-def]
        reads.append(event_id)
        return log_read(event_id)

    router.storage.feedback_state = counting  # type: ignore[method-assign]
    try:
        rng = np.random.default_rng(0)
        fresh = router.route(context=rng.normal(size=4))["event_id"]
        assert router.feedback(fresh, 0.5)["status"] == "accepted" and reads == []
        again = router.feedback(fresh, 0.9)  # read from the log: first wins
        assert again["status"] == "duplicate" and again["reward"] == 0.5 and reads == [fresh]
        old = router.route(context=rng.normal(size=4))["event_id"]
        time.sleep(0.4)
        with pytest.raises(Gone, match="TTL"):
            router.feedback(old, 0.5)
        with pytest.raises(NotFound):
            router.feedback(10**9, 0.5)
        assert [r.seq for r in router.storage.learn_rows(0)] == [1]  # one feedback accepted in all
    finally:
        router.stop()


def test_restart_with_other_settings_is_refused(tmp_path: Path) -> None:
    router = Router(parse_config(config(tmp_path)))
    router.start()
    router.stop()
    other = config(tmp_path)
    other["policy"] = {"name": "hpg"}
    with pytest.raises(InputError, match="written with settings"):
        Router(parse_config(other)).start()


def test_router_core_learns_in_fixed_groups_and_replays_identically(tmp_path: Path) -> None:
    cfg = parse_config(config(tmp_path, learn_batch=3, checkpoint_every=6))
    router = Router(cfg)
    router.start()
    rng = np.random.default_rng(0)
    try:
        for _ in range(20):
            out = router.route(context=rng.normal(size=4))
            router.feedback(out["event_id"], float(rng.random()))
    finally:
        router.stop()  # learns 18 rows (6 groups); rows 19-20 wait for their group
    store = Storage(cfg.storage.url)
    try:
        seq, state = next(store.verified_checkpoints())
        assert seq == 18
        fresh = router.new_policy()
        last, pending = replay(fresh, store.learn_rows(0), 3)
        assert (last, [r.seq for r in pending]) == (18, [19, 20])
        for k, v in fresh.state_dict()["state"].items():
            np.testing.assert_array_equal(state["state"][k], v)
    finally:
        store.dispose()


def _assert_same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert set(a) == set(b)
    for k, v in a.items():
        np.testing.assert_array_equal(v, b[k])


def test_two_stage_policy_learns_in_the_service_and_replays_identically(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Decisions of a policy that needs its ``info`` back at learn time (two-stage, with candidate
    subsets: restricted decisions) are logged with it; the learner learns every group (no warning),
    live, and the checkpoint equals a clean replay of the log bit for bit, also across a restart."""
    params = {"n_nominators": 2, "nominator": "pg", "ranker": "ucb", "n_prob_samples": 4}
    cfg = parse_config(config(tmp_path, learn_batch=2, checkpoint_every=4, max_models=4)
                       | {"policy": {"name": "two-stage", "params": params}})  # fmt: skip
    rng = np.random.default_rng(5)
    candidates = [None, ["a", "b"], ["c"], ["a", "c"]]

    def serve(n: int) -> dict[str, np.ndarray]:
        router = Router(cfg)
        router.start()
        try:
            initial = router.learner.policy.state_dict()["state"]
            for i in range(n):
                out = router.route(context=rng.normal(size=4), candidates=candidates[i % 4])
                router.feedback(out["event_id"], float(rng.random()))
            router.learner.stop()  # learns what was accepted (the last odd row waits for its group)
            learned = router.learner.policy.state_dict()["state"]
        finally:
            router.stop()
        assert any(not np.array_equal(v, learned[k]) for k, v in initial.items())  # it learned
        return learned

    with caplog.at_level("WARNING", logger="banditroute.service"):
        first = serve(13)
        second = serve(10)  # restart: restores the checkpoint at row 12, replays row 13, goes on
    assert "skipped learning" not in caplog.text
    store = Storage(cfg.storage.url)
    try:
        seqs = {seq: state["state"] for seq, state in store.verified_checkpoints()}
        for end, learned in ((12, first), (22, second)):
            policy = make_policy("two-stage", EnvSpec(4, 4), **params)
            last, _ = replay(policy, (r for r in store.learn_rows(0) if r.seq <= end), 2)
            assert last == end
            _assert_same_state(policy.state_dict()["state"], learned)
        _assert_same_state(seqs[22], second)
    finally:
        store.dispose()


def test_a_log_without_the_info_column_gains_it_at_start_up(tmp_path: Path) -> None:
    """Logs written before decisions carried ``info``: the column is added (as ``checksum`` was),
    old rows read back without info, new ones with it."""
    cfg = parse_config(config(tmp_path))
    learn_in_process(cfg, 5, seed=2)
    store = Storage(cfg.storage.url)
    try:
        store.conn.execute(sa.text("ALTER TABLE decisions DROP COLUMN info"))
        store.conn.commit()
        store.create_schema()
        cols = {c["name"] for c in sa.inspect(store.conn).get_columns("decisions")}
        assert "info" in cols
        assert all(r.info == {} for r in store.learn_rows(0))
    finally:
        store.dispose()
    learn_in_process(cfg, 5, seed=3)  # the router starts on the migrated log and goes on learning


def test_storage_dialect_is_chosen_by_url_scheme_and_others_are_refused(tmp_path: Path) -> None:
    """SQLite and PostgreSQL each have their dialect (engine set-up, upsert, writer lock); any other
    scheme is refused with a message naming the supported ones instead of taking PostgreSQL's path."""
    assert dialect_for(f"sqlite:///{tmp_path / 'x.db'}").writer_lock == "flock"
    assert dialect_for("postgresql+psycopg://u@localhost/db").writer_lock == "advisory"
    for url in ("mysql://u@localhost/db", "mssql+pyodbc://u@h/db", "oracle://u@h/db"):
        with pytest.raises(InputError, match=r"unsupported storage url scheme .*sqlite://, postgresql://"):
            Storage(url)
    with pytest.raises(InputError, match="cannot use storage url"):
        Storage("not a url")
    store = Storage(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert store.dialect is dialect_for(store.engine.url) and store.clone().dialect is store.dialect
    finally:
        store.dispose()


def test_ope_command_on_a_router_log(tmp_path: Path) -> None:
    learn_in_process(parse_config(config(tmp_path, checkpoint_every=50)), 300, seed=1)
    runner = CliRunner()
    db = tmp_path / "r.db"
    args = ["ope", "--log", str(db), "-p", "current", "-p", "uniform", "-p", "fixed:a", "-p", "greedy",
            "-e", "ips", "-e", "dr", "--json", str(tmp_path / "ope.json")]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "ope.json").read_text())
    assert out["rows"] == 150 and set(out["results"]) == {"current", "uniform", "fixed:a", "greedy"}
    greedy, uniform = out["results"]["greedy"]["dr"]["value"], out["results"]["uniform"]["dr"]["value"]
    assert greedy > uniform + 0.2  # a learned router beats random on this log
    for bad, msg in [(["-p", "fixed:zzz"], "unknown model"), (["-p", "magic"], "unknown target")]:
        res = runner.invoke(app, ["ope", "--log", str(db), *bad])
        assert res.exit_code == 2 and msg in res.output
    res = runner.invoke(app, ["ope", "--log", str(tmp_path / "none.db"), "-p", "uniform"])
    assert res.exit_code == 2 and "not found" in res.output


def test_keygen_prints_a_key_and_its_hash() -> None:
    res = CliRunner().invoke(app, ["keygen"])
    assert res.exit_code == 0
    key = res.output.split("key:")[1].split()[0]
    assert hash_key(key) in res.output


def test_builtin_components_build_the_real_retrievers_and_embedders(tmp_path: Path) -> None:
    from banditroute.service.components import build_embedder, build_retriever, load_corpus
    from banditroute.service.config import ComponentConfig

    pytest.importorskip("bm25s")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"id": "d1", "text": "the nile is the longest river"}\n{"_id": "d2", "title": "Peaks", "text": "everest"}\n'
    )
    ids, texts = load_corpus(corpus)
    assert ids == ["d1", "d2"] and texts[1] == "Peaks. everest"
    bm25 = build_retriever(ComponentConfig(factory="bm25"))
    bm25.index(texts)
    positions, _ = bm25.search(["longest river"], 1)
    assert positions.tolist() == [[0]]
    for bad, msg in [
        (ComponentConfig(factory="nope"), "unknown retriever"),
        (ComponentConfig(factory="dense"), "params.embedder"),
        (ComponentConfig(factory="os:getcwd"), "did not return a Retriever"),
        (ComponentConfig(factory="no.such.module:f"), "cannot import"),
    ]:
        with pytest.raises(InputError, match=msg):
            build_retriever(bad)
    with pytest.raises(InputError, match="unknown embedding model"):
        build_embedder(ComponentConfig(factory="not-a-model"))
    (tmp_path / "bad.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(InputError, match="'id'"):
        load_corpus(tmp_path / "bad.jsonl")


def test_the_sqlite_write_turn_waits_for_its_holder_and_times_out_as_a_storage_fault(tmp_path: Path) -> None:
    """Hot-path writes take ``<db>.turn`` (service/dialects.py's WriteTurn): while another process holds
    it a route waits, and past ``storage.timeout_s`` it is a storage fault (503), nothing logged; the
    kernel lets go of a killed holder's turn, and the next route is logged."""
    router = Router(
        parse_config({**config(tmp_path), "storage": {"url": f"sqlite:///{tmp_path / 'r.db'}", "timeout_s": 0.3}})
    )
    router.start()
    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print(1, flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / "r.db.turn")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"1"
        start = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"no write turn within 0\.3 s"):
            router.route(context=[0.1, 0.2, 0.3, 0.4])
        assert 0.3 <= time.monotonic() - start < 2.0
        assert router.storage.counts() == (0, 0)
        holder.kill()
        holder.wait()
        event = router.route(context=[0.1, 0.2, 0.3, 0.4])["event_id"]
        assert router.feedback(event, 0.5)["status"] == "accepted"
        assert router.storage.turn is not None and not router.storage.turn.held  # let go after each commit
    finally:
        holder.kill()
        router.stop()
