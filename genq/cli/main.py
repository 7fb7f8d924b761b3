"""The ``genq`` command: run the stack or one role of it, prepare the model; submit, show and
cancel jobs (genq.cli.jobs); manage API keys.

The job commands need only the client (``pip install genq``); every other command imports its
role, and the settings, when it runs, so that they need the ``server`` or a ``worker-*`` extra.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING

from genq.cli import jobs as cli_jobs
from genq.contract.logs import configure_logging

if TYPE_CHECKING:
    from genq.contract.settings import CommonSettings, FlowerSettings


def _redis_refuses(role: str, settings: CommonSettings) -> bool:
    """Says why, in one line, and returns True when Redis refuses the URL's password: better than
    a role that retries a refused login as if Redis were down."""
    if settings.redis_url is None:
        return False
    from genq.store.redis_client import credentials_problem  # noqa: PLC0415

    problem = credentials_problem(settings.broker_url())
    if problem is not None:
        print(f"genq {role}: {problem}", file=sys.stderr)
    return problem is not None


def _bad_gpus(gpus: str) -> bool:
    """Says why, in one line, and returns True when ``gpus`` does not split into engines."""
    from genq.cli.gpus import GpuSpecError, gpu_groups  # noqa: PLC0415 - stdlib only
    from genq.contract.settings import WorkerSettings  # noqa: PLC0415

    try:
        gpu_groups(gpus, WorkerSettings().engine_args.get("tensor_parallel_size", 1))
    except GpuSpecError as exc:
        print(f"genq: {exc}", file=sys.stderr)
        return True
    return False


def cmd_up(args: argparse.Namespace) -> int:
    from genq.cli import up  # noqa: PLC0415
    from genq.contract.settings import UpSettings  # noqa: PLC0415

    settings = UpSettings()
    configure_logging(settings.log_level)
    if args.gpus is not None:
        os.environ["GENQ_WORKER_GPUS"] = args.gpus  # up.run passes its environment on
    gpus = args.gpus if args.gpus is not None else os.environ.get("GENQ_WORKER_GPUS") or None
    # Checked here: a worker that exits 2 at once would be restarted by `genq up` forever.
    if gpus is not None and _bad_gpus(gpus):
        return 2
    return up.run(settings)


def _api_metrics_dir() -> tuple[str, bool]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the API's processes (api.metrics): where each uvicorn
    process writes its counters so that a scrape of any of them sums all. The operator's own
    directory if set (emptied: old values would count again), else a fresh one, removed on exit.
    Returns it and whether it is ours to remove."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        return given, False
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="genq-api-metrics-")
    return os.environ["PROMETHEUS_MULTIPROC_DIR"], True


def cmd_api(_: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from genq.contract.keys import KeysError, key_ring, read_keys  # noqa: PLC0415
    from genq.contract.settings import ApiSettings  # noqa: PLC0415

    settings = ApiSettings()
    configure_logging(settings.log_level)
    try:
        settings.broker_url()  # fail now, clearly, if no Redis is configured
        key_ring(read_keys(settings.api_keys_path()), settings.api_keys)  # and if keys are bad
    except (RuntimeError, KeysError) as exc:
        print(f"genq api: {exc}", file=sys.stderr)
        return 2
    if _redis_refuses("api", settings):
        return 2
    # Before any process of the API imports prometheus_client (it reads it at import).
    metrics_dir, ours = _api_metrics_dir()
    try:
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            workers=settings.api_workers,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=settings.api_shutdown_grace_s,
        )
    finally:
        if ours:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from genq.contract.settings import WorkerSettings  # noqa: PLC0415

    settings = WorkerSettings()
    configure_logging(settings.log_level)
    gpus = args.gpus if args.gpus is not None else settings.worker_gpus
    if _redis_refuses("worker", settings):  # before vLLM's imports, which take seconds
        return 2
    if gpus is not None:  # a supervisor of one worker per GPU group, not a worker
        from genq.cli import gpus as per_gpu  # noqa: PLC0415 - stdlib only: starts at once

        return per_gpu.run(settings, gpus)
    # One process: its metrics live in memory (worker.health). A directory meant for the API's
    # processes would turn vLLM's and genq's metrics into files nobody sums.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from worker.celery_app import main  # noqa: PLC0415 - heavy deps, worker extra

    return main()


def cmd_webhooks(_: argparse.Namespace) -> int:
    from genq.contract.settings import WebhookSettings  # noqa: PLC0415

    settings = WebhookSettings()
    configure_logging(settings.log_level)
    settings.broker_url()  # fail now, clearly, if no Redis is configured
    if _redis_refuses("webhooks", settings):
        return 2
    from genq.webhooks.app import main  # noqa: PLC0415 - light: no engine

    return main()


# Flower's tasks page with the arguments (genq's are readable: genq.store.queue.job_argsrepr).
# A default: Flower's own FLOWER_TASKS_COLUMNS wins.
FLOWER_TASKS_COLUMNS = "name,uuid,state,args,received,started,runtime,worker"


def flower_args(settings: FlowerSettings) -> list[str]:
    """``celery flower`` arguments for these settings. Refuses (RuntimeError) to run Flower
    without a password outside dev."""
    settings.check_flower_auth()
    args = [
        "flower",
        f"--address={settings.flower_host}",
        f"--port={settings.flower_port}",
        f"--persistent={settings.flower_persistent}",
    ]
    if settings.flower_persistent:
        args.append(f"--db={settings.flower_db_path()}")
    if settings.flower_basic_auth is not None:
        args.append(f"--basic-auth={settings.flower_basic_auth.get_secret_value()}")
    return args


def cmd_flower(_: argparse.Namespace) -> int:
    from genq.contract.settings import FlowerSettings  # noqa: PLC0415

    settings = FlowerSettings()
    configure_logging(settings.log_level)
    try:
        args = flower_args(settings)
        settings.broker_url()
    except RuntimeError as exc:
        print(f"genq flower: {exc}", file=sys.stderr)
        return 2
    if _redis_refuses("flower", settings):
        return 2
    if settings.flower_persistent:
        settings.flower_db_path().parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLOWER_TASKS_COLUMNS", FLOWER_TASKS_COLUMNS)
    from kombu import Queue  # noqa: PLC0415

    from genq.contract.constants import MODELS_KEY  # noqa: PLC0415
    from genq.store.models import recent  # noqa: PLC0415
    from genq.store.queue import make_celery, run_celery  # noqa: PLC0415
    from genq.store.redis_client import sync_redis  # noqa: PLC0415

    app = make_celery(settings, "genq-flower")
    # Flower lists the queues it knows, and those of the workers it sees: each model's, declared
    # (GENQ_MODELS) or registered by a worker so far.
    with sync_redis(settings.broker_url()) as client:
        registered = recent(client.hgetall(MODELS_KEY), settings.model_forget_s)
    app.conf.task_queues = [Queue(q) for q in settings.model_queues(registered)]
    # In this process, on genq's own Celery configuration: neither the broker URL nor the
    # password appears on a command line.
    return run_celery(app, args)


def cmd_model(args: argparse.Namespace) -> int:
    from genq.contract.settings import CommonSettings  # noqa: PLC0415
    from worker.model_files import default_model_dir, is_prepared, prepare_default_model  # noqa: PLC0415

    settings = CommonSettings()
    configure_logging(settings.log_level)
    target = default_model_dir(settings.cache_dir)
    if args.action == "prepare":
        target = prepare_default_model(settings.cache_dir)
    elif not is_prepared(target):
        print(f"not prepared yet: run `genq model prepare` (it goes to {target})", file=sys.stderr)
        return 1
    print(target)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from genq.contract import keys  # noqa: PLC0415
    from genq.contract.settings import ApiSettings  # noqa: PLC0415

    settings = ApiSettings()
    path = settings.api_keys_path()
    from_env = settings.api_keys.keys if settings.api_keys else []
    try:
        if args.action == "create":
            key = keys.create_key(
                path,
                args.name,
                rate_limit_rps=args.rps,
                rate_limit_burst=args.burst,
                max_active_jobs=args.max_active,
                taken=frozenset(k.name for k in from_env),
            )
            print(key)  # alone on stdout: KEY=$(genq keys create ci)
            print(
                f"genq keys: key {args.name!r} created; only its hash is kept ({path}). "
                "Keep the key now: it is never shown again.",
                file=sys.stderr,
            )
        elif args.action == "revoke":
            keys.revoke_key(path, args.name)
            print(
                f"genq keys: {args.name!r} revoked (APIs notice within a second)", file=sys.stderr
            )
        else:
            stored = keys.read_keys(path)
            listed = [(k, str(path)) for k in (stored.keys if stored else [])]
            listed += [(k, "GENQ_API_KEYS") for k in from_env]
            if stored is None and not from_env:
                print(f"genq keys: no keys ({path} absent): the API is open to anyone (dev mode)")
            for k, source in listed:
                limits = (
                    f"rps={k.rate_limit_rps or settings.rate_limit_rps:g} "
                    f"burst={k.rate_limit_burst or settings.rate_limit_burst} "
                    f"max_active={k.max_active_jobs or settings.max_active_jobs_per_key}"
                )
                print(f"{k.name}\t{k.created_at.isoformat()}\t{limits}\t{source}")
    except keys.KeysError as exc:
        print(f"genq keys: {exc}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genq", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    gpus_help = "one engine process per GPU group on this host, e.g. 0,1 (GENQ_WORKER_GPUS)"
    up = sub.add_parser(
        "up", help="Redis (embedded unless REDIS_URL), worker, webhooks, API, Flower"
    )
    up.add_argument("--gpus", metavar="IDS", help=gpus_help)
    up.set_defaults(fn=cmd_up)
    sub.add_parser("api", help="the HTTP API (uvicorn)").set_defaults(fn=cmd_api)
    worker = sub.add_parser("worker", help="a Celery worker with a warm vLLM engine")
    worker.add_argument("--gpus", metavar="IDS", help=gpus_help)
    worker.set_defaults(fn=cmd_worker)
    sub.add_parser(
        "webhooks", help="the webhook sender: signs, delivers and retries webhooks (no engine)"
    ).set_defaults(fn=cmd_webhooks)
    sub.add_parser("flower", help="Flower, on the same broker").set_defaults(fn=cmd_flower)
    model = sub.add_parser("model", help="the default model")
    model.add_argument("action", choices=["prepare", "path"])
    model.set_defaults(fn=cmd_model)
    cli_jobs.add_commands(sub)  # submit, get, cancel
    keys = sub.add_parser(
        "keys", help="API keys (kept hashed in GENQ_API_KEYS_FILE, <data dir>/api_keys.json)"
    )
    keys.set_defaults(fn=cmd_keys)
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; it is printed once, on stdout")
    create.add_argument("name", help="letters, digits, '_', '.', '-'; unique")
    create.add_argument("--rps", type=float, help="requests/s (default GENQ_RATE_LIMIT_RPS)")
    create.add_argument("--burst", type=int, help="requests at once (GENQ_RATE_LIMIT_BURST)")
    create.add_argument(
        "--max-active", type=int, help="jobs queued or running (GENQ_MAX_ACTIVE_JOBS_PER_KEY)"
    )
    actions.add_parser("list", help="names, creation times and limits (never the keys)")
    revoke = actions.add_parser("revoke", help="remove a key")
    revoke.add_argument("name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
