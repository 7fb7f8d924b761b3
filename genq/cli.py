"""The ``genq`` command: run the stack or one role of it, prepare the model; submit, show and
cancel jobs (genq.cli_jobs)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile

from genq import cli_jobs
from genq.settings import (
    ApiSettings,
    CommonSettings,
    FlowerSettings,
    UpSettings,
    WorkerSettings,
)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(processName)s %(name)s] %(message)s",
    )


def cmd_up(_: argparse.Namespace) -> int:
    from genq import up  # noqa: PLC0415

    settings = UpSettings()
    _logging(settings.log_level)
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

    settings = ApiSettings()
    _logging(settings.log_level)
    settings.broker_url()  # fail now, clearly, if no Redis is configured
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
            timeout_graceful_shutdown=30,
        )
    finally:
        if ours:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    _logging(WorkerSettings().log_level)
    # One process: its metrics live in memory (worker.health). A directory meant for the API's
    # processes would turn vLLM's and genq's metrics into files nobody sums.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from worker.celery_app import main  # noqa: PLC0415 - heavy deps, worker extra

    return main()


def cmd_webhooks(_: argparse.Namespace) -> int:
    from genq.settings import WebhookSettings  # noqa: PLC0415

    settings = WebhookSettings()
    _logging(settings.log_level)
    settings.broker_url()  # fail now, clearly, if no Redis is configured
    from worker.webhook_app import main  # noqa: PLC0415 - light: no engine

    return main()


# Flower's tasks page with the arguments (genq's are readable: genq.celery_config.job_argsrepr).
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
    settings = FlowerSettings()
    _logging(settings.log_level)
    try:
        args = flower_args(settings)
        settings.broker_url()
    except RuntimeError as exc:
        print(f"genq flower: {exc}", file=sys.stderr)
        return 2
    if settings.flower_persistent:
        settings.flower_db_path().parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLOWER_TASKS_COLUMNS", FLOWER_TASKS_COLUMNS)
    from genq.celery_config import make_celery, run_celery  # noqa: PLC0415

    # In this process, on genq's own Celery configuration: neither the broker URL nor the
    # password appears on a command line.
    return run_celery(make_celery(settings, "genq-flower"), args)


def cmd_model(args: argparse.Namespace) -> int:
    from genq.model import default_model_dir, is_prepared, prepare_default_model  # noqa: PLC0415

    settings = CommonSettings()
    _logging(settings.log_level)
    target = default_model_dir(settings.cache_dir)
    if args.action == "prepare":
        target = prepare_default_model(settings.cache_dir)
    elif not is_prepared(target):
        print(f"not prepared yet: run `genq model prepare` (it goes to {target})", file=sys.stderr)
        return 1
    print(target)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genq", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="Redis (embedded unless REDIS_URL), worker, webhooks, API, Flower"
    ).set_defaults(fn=cmd_up)
    sub.add_parser("api", help="the HTTP API (uvicorn)").set_defaults(fn=cmd_api)
    sub.add_parser("worker", help="a Celery worker with a warm vLLM engine").set_defaults(
        fn=cmd_worker
    )
    sub.add_parser(
        "webhooks", help="the webhook sender: signs, delivers and retries webhooks (no engine)"
    ).set_defaults(fn=cmd_webhooks)
    sub.add_parser("flower", help="Flower, on the same broker").set_defaults(fn=cmd_flower)
    model = sub.add_parser("model", help="the default model")
    model.add_argument("action", choices=["prepare", "path"])
    model.set_defaults(fn=cmd_model)
    cli_jobs.add_commands(sub)  # submit, get, cancel
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
