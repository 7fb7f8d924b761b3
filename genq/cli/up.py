"""`genq up`: the whole stack in the foreground, for one machine.

Starts Redis (embedded, unless ``REDIS_URL`` is set, with a password kept under the data dir), one
worker, the webhooks process, the API and Flower, each as a child process in its own process group
(genq.cli.supervisor); prints the URLs, then "ready" once its own API's ``/readyz`` says so: the
API gets a fresh instance token and ``/readyz`` answers with it (api.routes.health), so that no
other program on the port passes for it. Before anything starts, every port it will listen on must
be free: a taken one ends it with exit code 2 and the variable to change. A worker or webhooks
process that dies is restarted. Without ``GENQ_WEBHOOK_SECRET``, the webhook signing secret is
made once under the data dir and printed; without ``GENQ_FLOWER_BASIC_AUTH``, so is a Flower
login, so that its dashboard and its API both answer (Flower's API refuses every request where no
login is set). SIGINT or SIGTERM stops every process it started (the engine's own children
included) and the embedded Redis, leaving no process and no port behind, and says "genq: stopped"
last.

Until "ready" it prints its URLs, the worker's start-up one phase a line, and warnings: the
children log at ``GENQ_LOG_LEVEL`` (INFO), where the libraries' chatter is held back
(genq.contract.logs), and its own polling logs nothing. ``GENQ_LOG_LEVEL=debug`` shows it all.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import time
from typing import Any

import httpx

from genq.cli.supervisor import ALWAYS, NEVER, Child, Stop, Supervisor
from genq.contract.kept import load_or_create
from genq.contract.models import served_name
from genq.contract.settings import UpSettings, WorkerSettings
from genq.contract.webhooks import load_or_create_secret
from genq.store.embedded import PASSWORD_FILE, EmbeddedRedis, load_or_create_password

GRACE_S = 20.0  # SIGTERM -> SIGKILL, for all children together
WORKER_RESTART_DELAY_S = 2.0
POLL_S = 0.5
ROLES = ("api", "worker", "webhooks", "flower")
# Restarted however soon they exit; the API or Flower exiting stops everything (exit 1).
RESTARTED_ROLES = ("worker", "webhooks")
FLOWER_LOGIN_FILE = "flower_login"
# As api.routes.health names them (the CLI does not import the API).
INSTANCE_TOKEN_ENV = "GENQ_INSTANCE_TOKEN"
INSTANCE_HEADER = "X-Genq-Instance"


def taken_port(settings: UpSettings) -> str | None:
    """Why ``genq up`` cannot start, if a port it will listen on is in use already: another
    program there would answer in genq's place (its ``/readyz`` too)."""
    ports = [
        (settings.api_host, settings.api_port, "GENQ_API_PORT"),
        (settings.flower_host, settings.flower_port, "GENQ_FLOWER_PORT"),
    ]
    if worker_port := int(os.environ.get("GENQ_WORKER_HTTP_PORT") or 0):  # 0: any free port
        host = (
            os.environ.get("GENQ_WORKER_HTTP_HOST")
            or WorkerSettings.model_fields["worker_http_host"].default
        )
        ports.append((host, worker_port, "GENQ_WORKER_HTTP_PORT"))
    for host, port, variable in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As the servers bind: a port left in TIME_WAIT is free to them, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                return f"port {port} on {host} is in use (set {variable}): {exc.strerror}"
    return None


def run(settings: UpSettings) -> int:
    if reason := taken_port(settings):
        print(f"genq: {reason}", file=sys.stderr, flush=True)
        return 2
    supervisor = Supervisor(GRACE_S, POLL_S, WORKER_RESTART_DELAY_S)
    supervisor.handle_signals()
    redis: EmbeddedRedis | None = None
    try:
        env = dict(os.environ)
        env["GENQ_ENV"] = settings.env  # dev, unless GENQ_ENV says otherwise
        if settings.redis_url is None:
            password = load_or_create_password(settings.data_dir)
            redis = EmbeddedRedis(
                settings.data_dir, password=password, maxmemory=settings.redis_maxmemory
            )
            # Ctrl-C reaches the terminal's whole foreground process group, and Redis, a plain
            # child, is in it: it would shut down at once, under the children still draining into
            # it (a worker withdrawing itself, the API's last writes). Started with SIGINT
            # blocked, a mask it inherits and keeps, it is stopped by this process, last
            # (SIGTERM, in the finally below). A Ctrl-C meanwhile waits, then stops everything.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                redis.start()  # known before it starts: a signal meanwhile still stops it
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            env["REDIS_URL"] = redis.url
            print(
                f"genq: embedded Redis at {redis.public_url} (AOF in {redis.dir}; "
                f"password in {redis.dir / PASSWORD_FILE})",
                flush=True,
            )
        else:
            env["REDIS_URL"] = str(settings.redis_url)
        if not env.get("GENQ_MODELS"):
            # The worker's model: the API takes its jobs from the start, before the worker has
            # registered it (genq.contract.models).
            env["GENQ_MODELS"] = served_name(
                env.get("GENQ_MODEL") or None, env.get("GENQ_MODEL_NAME") or None
            )
        if not env.get("GENQ_WEBHOOK_SECRET"):
            secret, created = load_or_create_secret(settings.data_dir)
            env["GENQ_WEBHOOK_SECRET"] = secret
            if created:
                print(
                    f"genq: webhook signing secret (new; kept in {settings.data_dir}): {secret}",
                    flush=True,
                )
        flower_login = ""
        if not env.get("GENQ_FLOWER_BASIC_AUTH"):
            path = settings.data_dir / FLOWER_LOGIN_FILE
            login, created = load_or_create(path, lambda: "genq:" + secrets.token_urlsafe(12))
            env["GENQ_FLOWER_BASIC_AUTH"] = login
            flower_login = f"  (login in {path})"
            if created:
                print(f"genq: Flower login (new; kept in {path}): {login}", flush=True)
        token = secrets.token_urlsafe(16)
        env[INSTANCE_TOKEN_ENV] = token  # the API's /readyz answers with it
        for role in ROLES:
            argv = [sys.executable, "-m", "genq.cli.main", role]
            supervisor.start(Child(role, argv, env, ALWAYS if role in RESTARTED_ROLES else NEVER))
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        print(f"genq: API     {api_url}  (docs: {api_url}/docs)", flush=True)
        flower_url = f"http://{settings.flower_host}:{settings.flower_port}"
        print(f"genq: Flower  {flower_url}{flower_login}", flush=True)
        print(
            "genq: the worker is loading and warming its model; Ctrl-C stops everything", flush=True
        )
        ready = _Ready(api_url, token)
        failed = supervisor.supervise(ready.restarted, ready.poll)
        print(f"genq: {failed.child.name} exited ({failed.code}); stopping", flush=True)
        return 1
    except Stop as stop:
        print(f"genq: {stop}: stopping", flush=True)
        return 0
    finally:
        supervisor.stop_all()
        if redis is not None:
            redis.stop()
        print("genq: stopped", flush=True)


def _print_start_up(workers: list[dict[str, Any]]) -> None:
    """One line per warm worker: its time to ready and the phases that weigh."""
    for worker in workers:
        s = worker["startup_s"]
        print(
            f"genq: worker {worker['name']} warm in {s['total']:.1f} s (import vLLM "
            f"{s.get('imports', 0):.1f}, engine {s.get('engine', 0):.1f}, warm-up "
            f"{s.get('warmup', 0):.1f}); compile caches under GENQ_CACHE_DIR/compile",
            flush=True,
        )


def ready_workers(api_url: str, token: str, since: float) -> list[dict[str, Any]] | None:
    """None until the stack is ready; then the workers warm since ``since`` (none listed where
    API keys are on: /v1/workers wants a key, and /readyz is all there is to tell).

    Ready: ``/readyz`` says yes with ``token`` (api.routes.health), so the answer is from the API
    this process started, not from another program on its port; and a worker became warm after
    ``since``: a worker killed without a goodbye stays listed until its heartbeat key expires, and
    must not count for its successor."""
    try:
        answer = httpx.get(f"{api_url}/readyz", timeout=1.0)
        if answer.status_code != 200 or answer.headers.get(INSTANCE_HEADER) != token:
            return None
        listed = httpx.get(f"{api_url}/v1/workers", timeout=1.0)
        if listed.status_code == 401:
            return []
        workers = listed.json()["workers"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    fresh = [w for w in workers if w["ready_at"] >= since]
    return fresh or None


class _Ready:
    """Prints "ready" once the stack is, and again each time a restarted worker is."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url
        self.token = token
        self.ready = False
        self.since = 0.0  # a worker warm since then counts as ready (see ready_workers)

    def restarted(self, child: Child, code: int, _up_s: float) -> None:
        print(f"genq: {child.name} exited ({code}); restart #{child.restarts}", flush=True)
        if child.name == "worker":
            self.ready, self.since = False, time.time()

    def poll(self) -> None:
        if self.ready:
            return
        workers = ready_workers(self.api_url, self.token, self.since)
        if workers is None:
            return
        self.ready = True
        _print_start_up(workers)
        print(
            f"genq: ready. Try:\n  curl -X POST {self.api_url}/generate "
            "-H 'Content-Type: application/json' "
            '-d \'{"prompt": "What is the capital of France?"}\'',
            flush=True,
        )
