"""``banditroute serve``, ``keygen``, ``ope`` and ``bench ope``: the router service and off-policy evaluation.

The service and its web stack are the ``[serve]`` extra; they are imported inside the commands,
so ``banditroute --help`` stays fast and works without them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from banditroute.cli.app import app, bench_app, console, user_errors
from banditroute.core.validation import InputError

SERVE_INSTALL = "pip install 'banditroute[serve]'"


def _need_serve() -> None:
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise InputError(f"the router service needs the [serve] extra ({SERVE_INSTALL}): {exc}") from None


@app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Router config (TOML).")],
    host: Annotated[str | None, typer.Option(help="Override [server] host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override [server] port.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Run N router worker processes and one learner (default: [cluster] workers)."),
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            help="single (one process, the default), or one part of a cluster across hosts: learner | worker."
        ),
    ] = "single",
    worker_index: Annotated[int, typer.Option(min=0, help="A worker's number (seeds its generator).")] = 0,
    fd: Annotated[int | None, typer.Option(hidden=True, help="A listening socket inherited from `--workers`.")] = None,
) -> None:
    """Run the HTTP router: route requests, log them, learn from feedback (Ctrl-C stops cleanly).

    With ``--workers N`` (or a ``[cluster]`` table) it runs N router processes on one port and one
    learner process over the same log (docs/architecture.md)."""
    with user_errors():
        _need_serve()
        from banditroute.service.config import load_config

        overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        cfg = load_config(config, server=overrides) if overrides else load_config(config)
        if role not in ("single", "learner", "worker"):
            raise InputError("--role must be single, learner or worker")
        n_workers = workers if workers is not None else (cfg.cluster.workers if cfg.cluster is not None else None)
        # Threads that hold the GIL in short bursts (the learner, the snapshot follower); a 1 ms switch
        # interval (default 5 ms) keeps a burst from delaying a routing request by more than that.
        sys.setswitchinterval(0.001)
        if role == "learner":
            from banditroute.service.supervisor import run_learner

            run_learner(cfg, log_level)
        elif role == "worker":
            from banditroute.service.supervisor import run_worker

            run_worker(cfg, _app_factory(cfg), index=worker_index, fd=fd, log_level=log_level)
        elif n_workers is not None:
            from banditroute.service.supervisor import Supervisor

            Supervisor(config, cfg, n_workers, log_level).run()
        else:
            from banditroute.service.router import Router
            from banditroute.service.supervisor import serve_http

            serve_http(Router(cfg), _app_factory(cfg), log_level=log_level)


def _app_factory(cfg: Any) -> Any:
    """``router -> app``, with the LLM gateway installed when the config has a ``[gateway]`` table."""
    from banditroute.service.app import create_app

    extend = None
    if cfg.gateway is not None:  # the OpenAI-compatible LLM gateway on this router (docs/gateway.md)
        from banditroute.gateway.config import gateway_config
        from banditroute.gateway.routes import extension

        extend = extension(gateway_config(cfg))
    return lambda router: create_app(cfg, router, extend)


@app.command("keygen")
def keygen(count: Annotated[int, typer.Option("--count", "-n", min=1, max=100)] = 1) -> None:
    """Print new API keys and the hashes to put in the router config's [auth] table."""
    from banditroute.service.auth import hash_key, new_key

    for _ in range(count):
        key = new_key()
        console.print(f"key:  {key}\nhash: {hash_key(key)}", highlight=False, soft_wrap=True)


def _open_log(log: str) -> Any:
    from banditroute.service.storage import Storage

    if "://" not in log:
        path = Path(log)
        if not path.is_file():
            raise InputError(f"log database not found: {path}")
        log = f"sqlite:///{path.resolve()}"
    return Storage(log)


@app.command("ope")
def ope(
    log: Annotated[str, typer.Option("--log", help="The router's log: a SQLite file or a database URL.")],
    policy: Annotated[
        list[str],
        typer.Option(
            "--policy",
            "-p",
            help="Target: 'current' (the service's latest checkpoint), 'uniform', 'fixed:MODEL', or a registry "
            "policy name (trained on the first --train-frac of the log). Repeat for several.",
        ),
    ],
    policy_opt: Annotated[
        list[str] | None, typer.Option("--policy-opt", help="name.key=value for a registry target.")
    ] = None,
    estimator: Annotated[list[str] | None, typer.Option("--estimator", "-e", help="Estimators (default all).")] = None,
    train_frac: Annotated[float, typer.Option(help="Share of the log that trains registry targets.")] = 0.5,
    alpha: Annotated[float, typer.Option(help="Intervals at level 1 - alpha.")] = 0.05,
    last: Annotated[int | None, typer.Option(help="Use only the last N decisions with feedback.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of cross-fitting, bootstrap and stochastic targets.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")] = None,
) -> None:
    """Off-policy estimates (IPS, SNIPS, DM, DR, switch-DR, DR-OS) of target policies on the router's log."""
    with user_errors():
        _need_serve()
        from banditroute.cli.app import parse_policy_options
        from banditroute.core.types import EnvSpec
        from banditroute.ope import ESTIMATORS, Target, evaluate_targets
        from banditroute.policies.registry import REGISTRY, make_policy

        store = _open_log(log)
        try:
            raw = store.get_meta("settings")
            if raw is None:
                raise InputError(f"{log} is not a banditroute router log (no settings)")
            settings = json.loads(raw)
            blog, skipped = store.export_log(tuple(settings["reward_range"]), last=last)
            if blog is None:
                raise InputError(f"the log has no valid decisions with feedback yet ({skipped} invalid rows skipped)")
            models = {m.name: m.slot for m in store.models()}
            checkpoint = next(iter(store.verified_checkpoints()), None)
        finally:
            store.dispose()
        spec = EnvSpec(n_arms=settings["capacity"], dim=settings["dim"], reward_range=tuple(settings["reward_range"]))
        names = [p for p in policy if p in REGISTRY and p not in ("uniform",)]
        options = parse_policy_options(policy_opt or [], names)
        if not 0 < train_frac < 1:
            raise InputError(f"--train-frac must lie in (0, 1), got {train_frac}")
        n_train = round(train_frac * blog.n) if names else 0
        if names and not 0 < n_train < blog.n:
            raise InputError(f"{blog.n} logged rows are too few to split at --train-frac {train_frac}")
        targets = []
        for target in policy:
            if target == "current":
                if checkpoint is None:
                    raise InputError("the log has no policy checkpoint yet ('current' needs one)")
                pol = make_policy(settings["policy"], spec, **settings["params"])
                pol.load_state_dict(checkpoint[1])
                targets.append(Target(target, pol))
            elif target == "uniform":
                targets.append(Target(target, make_policy("uniform", spec)))
            elif target.startswith("fixed:"):
                model = target.removeprefix("fixed:")
                if model not in models:
                    raise InputError(f"unknown model {model!r}; the log knows {', '.join(models)}")
                targets.append(Target(target, make_policy("fixed", spec, arm=models[model]), arm=models[model]))
            elif target in REGISTRY:
                targets.append(Target(target, make_policy(target, spec, **options.get(target, {})), fit=True))
            else:
                raise InputError(f"unknown target {target!r}: use current, uniform, fixed:MODEL or a policy name")
        found = evaluate_targets(
            blog, targets, train_rows=n_train, estimators=estimator or tuple(ESTIMATORS), alpha=alpha, seed=seed
        )
        results = {t.name: {name: e.as_dict() for name, e in t.estimates.items()} for t in found}
        n_test = blog.n - n_train

    level = f"{100 * (1 - alpha):g}%"
    skip_note = f"; {skipped} invalid rows skipped" if skipped else ""
    table = Table(title=f"Off-policy estimates on {n_test} logged rows ({level} intervals{skip_note})")
    for col in ("target", "estimator", "value", "s.e.", "normal", "bootstrap", "EL", "ESS"):
        table.add_column(col, justify="left" if col in ("target", "estimator") else "right")
    for target, ests in results.items():
        for name, e in ests.items():
            cells = [f"[{e[f'{m}_lo']:.3f}, {e[f'{m}_hi']:.3f}]" for m in ("normal", "bootstrap", "el")]
            table.add_row(target, name, f"{e['value']:.4f}", f"{e['std_error']:.4f}", *cells, f"{e['ess']:.0f}")
    console.print(table)
    if json_out is not None:
        json_out.write_text(
            json.dumps({"rows": n_test, "skipped_rows": skipped, "alpha": alpha, "results": results}, indent=2)
        )


@bench_app.command("ope")
def bench_ope(
    out: Annotated[Path, typer.Option(help="Folder for ope.csv and ope.png.")] = Path("runs/ope"),
    n_logs: Annotated[int, typer.Option(help="Seeded logs per (behaviour, target).")] = 100,
    log_size: Annotated[int | None, typer.Option(help="Rows per log (default: 1000 and 2000).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Evaluate the evaluators: each estimator's bias, RMSE and interval coverage against known truth."""
    with user_errors():
        from banditroute.studies.ope_evaluation import run_report

        run_report(out, n_logs=n_logs, log_size=log_size, seed=seed, console=console)
