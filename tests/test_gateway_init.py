"""``banditroute init``: valid commented configs with fresh keys, and the README's two-command quickstart."""

from __future__ import annotations

import os
import re
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from banditroute.cli.main import app
from banditroute.service.auth import hash_key
from banditroute.service.config import load_config
from service_support import Server

runner = CliRunner()


def init(kind: str, out: Path) -> tuple[str, str]:
    result = runner.invoke(app, ["init", kind, "--out", str(out)])
    assert result.exit_code == 0, result.output
    client = re.search(r"client key: (\S+)", result.output)
    admin = re.search(r"admin key:  (\S+)", result.output)
    assert client and admin
    return client.group(1), admin.group(1)


@pytest.mark.parametrize("kind", ["router", "gateway", "retrieval"])
def test_init_writes_a_valid_private_config_with_fresh_key_hashes(tmp_path: Path, kind: str) -> None:
    client, admin = init(kind, tmp_path / "router.toml")
    text = (tmp_path / "router.toml").read_text()
    assert client not in text and admin not in text  # only the hashes are stored
    cfg = load_config(tmp_path / "router.toml")
    assert cfg.auth.api_key_hashes == [hash_key(client)] and cfg.auth.admin_key_hashes == [hash_key(admin)]
    assert (cfg.gateway is not None) == (kind == "gateway") and (cfg.retrieval is not None) == (kind == "retrieval")
    assert os.stat(tmp_path / "router.toml").st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["init", kind, "--out", str(tmp_path / "router.toml")])
    assert again.exit_code == 2 and "exists" in again.output
    assert load_config(tmp_path / "router.toml").auth.api_key_hashes == [hash_key(client)]  # untouched
    other, _ = init(kind, tmp_path / "second.toml")
    assert other != client


def test_quickstart_gateway_answers_the_openai_client(tmp_path: Path) -> None:
    """README: `banditroute init gateway` then `banditroute serve --config router.toml`; the openai client
    pointed at it lists the router, its profile and the upstreams (with the real MiniLM embedder)."""
    client_key, _ = init("gateway", tmp_path / "router.toml")
    server = Server(tmp_path / "router.toml", tmp_path / "serve.log").start()
    try:
        models = openai.OpenAI(base_url=server.url + "/v1", api_key=client_key, max_retries=0).models.list()
        assert [m.id for m in models] == ["router", "router-cheap", "small", "large"]
    finally:
        server.stop()


def test_invalid_gateway_tables_are_one_line_config_errors(tmp_path: Path) -> None:
    from banditroute.core.validation import InputError
    from banditroute.gateway.config import gateway_config
    from banditroute.gateway.reward_hook import load_callable

    init("gateway", tmp_path / "router.toml")
    good = (tmp_path / "router.toml").read_text()
    hook = "\n[gateway.reward_hook]\n"
    for bad, message in [
        (good.replace('base_url = "http://127.0.0.1:8001/v1"', 'base_url = "not a url"'), "upstreams.0.base_url"),
        (good.replace('api_key_env = "SMALL_API_KEY"', 'api_key_env = "sk-live key"'), "upstreams.0.api_key_env"),
        (good.replace('name = "large"', 'name = "small"'), "upstream names must be unique"),
        (good.replace('name = "large"', 'name = "router-x"'), "must not be 'router'"),
        (good.replace('upstreams = ["small"]', 'upstreams = ["nope"]'), "unknown upstreams"),
        (good.replace("input_price = 0.10", "input_price = -1"), "gateway.upstreams.0.input_price"),
        (good + hook + 'callable = "judges:judge"\ncommand = ["judge"]', "exactly one of 'callable' and 'command'"),
        (good + hook + "timeout_s = 5", "exactly one of 'callable' and 'command'"),
        (good + hook + 'callable = "judges.judge()"', "gateway.reward_hook.callable"),
        (good + hook + "command = []", "gateway.reward_hook.command"),
        (good + hook + 'command = ["judge"]\ntimeout_s = 0', "gateway.reward_hook.timeout_s"),
    ]:
        (tmp_path / "bad.toml").write_text(bad)
        with pytest.raises(InputError, match=message) as err:
            gateway_config(load_config(tmp_path / "bad.toml"))
        assert "\n" not in str(err.value)
    (tmp_path / "hook.toml").write_text(good + hook + 'callable = "no_such_judges:judge"')
    hook_config = gateway_config(load_config(tmp_path / "hook.toml")).reward_hook
    assert hook_config is not None and hook_config.callable is not None
    with pytest.raises(InputError, match=r"reward_hook\.callable: cannot import 'no_such_judges:judge'"):
        load_callable(hook_config.callable)
    with pytest.raises(InputError, match="is not callable"):
        load_callable("banditroute.gateway.reward_hook:MAX_OUTPUT")
