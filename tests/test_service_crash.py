"""Crash safety: ``kill -9`` the server in the middle of a loopback load, restart, finish.

After the restart no acknowledged feedback is lost, nothing is learned twice, and the policy state
equals an uninterrupted replay of the same log from scratch, bit for bit (LinUCB learning in groups
of 4 feedback rows — Woodbury, not Sherman–Morrison — so the fixed grouping is what is tested).
The same scenario on PostgreSQL with fast HPG is in ``test_service_postgres.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from service_support import check_after_crash, crash_scenario


def test_kill_9_mid_load_loses_nothing_and_replays_bit_for_bit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'router.db'}"
    outcome = crash_scenario(tmp_path, url, {"name": "linucb", "params": {"epsilon": 0.1}}, batch=4)
    check_after_crash(url, outcome)
