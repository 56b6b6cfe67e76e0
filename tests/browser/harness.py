"""The whole product as separate processes, for the browser journeys and bench/load.py.

The site runs under gunicorn and a real `celery worker` against PostgreSQL and a Redis
broker, exactly as in production; mail goes over SMTP to a capturing server, and the
Stripe and Telegram APIs are local stand-ins. Every listening socket is bound by this
process on 127.0.0.1 port 0 before anything starts, so parallel runs never clash and the
site knows its own URL (gunicorn inherits its socket as `fd://N`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from tests import processes
from tests.fakes.smtp import FakeSMTPServer
from tests.processes import bind_loopback

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_DB = int(os.environ.get("BROWSER_REDIS_DB", "7"))
REDIS_URL = os.environ.get("BROWSER_REDIS_URL", processes.redis_database_url(REDIS_DB))
# Every stack keeps its Redis keys (cache, rate limits, broker queues) under a prefix of
# its own, so stacks of parallel runs share database 7 without seeing each other's work.
KEY_PREFIX = f"broadside-e2e-{os.getpid()}"
SECRET_KEY = "e2e-secret-key-not-for-production-0123456789abcdefghijkl"
STRIPE_SECRET_KEY = "sk_test_broadside_e2e"
STRIPE_WEBHOOK_SECRET = "whsec_broadside_e2e_0123456789"
TELEGRAM_BOT_TOKEN = "123456:broadside-e2e"
TELEGRAM_CHAT_ID = "@broadside_e2e"


class HarnessError(RuntimeError):
    """A process of the stack did not start; the message says which and shows its log."""


def database_url(name: str) -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/broadside")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise HarnessError(
            f"Redis is not reachable at {REDIS_URL} ({exc}). Start it, or point "
            "BROWSER_REDIS_URL at a Redis database these tests may use."
        ) from exc
    return client


def delete_keys(pattern: str) -> int:
    client = redis_client()
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


def clear_cache_keys(prefix: str = KEY_PREFIX) -> None:
    """Forget the stack's cached pages and rate-limit counters, not its queued tasks."""
    delete_keys(f"{prefix}-cache:*")


def forget_stack_keys(prefix: str = KEY_PREFIX) -> None:
    """Remove every key a stack left in Redis; call once its processes have stopped."""
    delete_keys(f"{prefix}-*")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise HarnessError(
                f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10) -> None:
        # The process leads its own group, so this reaches gunicorn's and celery's
        # children too, and nothing else.
        processes.stop(self.popen, timeout=timeout)


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    result = processes.manage(*args, env=env, timeout=timeout)
    if result.returncode != 0:
        raise HarnessError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def wait_until(
    condition: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Stack:
    """A running site: its URL, the processes, and where their logs are."""

    site_url: str
    env: dict[str, str]
    workdir: Path
    processes: list[Process] = field(default_factory=list)

    def logs(self) -> str:
        return "\n\n".join(
            f"--- {p.name} ({p.log_path}) ---\n{p.log_tail()}" for p in self.processes
        )

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def stack_env(
    *,
    database_name: str,
    site_url: str,
    workdir: Path,
    smtp_port: int | None = None,
    stripe_api_base: str | None = None,
    telegram_api_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The production settings module, configured the way an operator would."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST_", "STRIPE_", "TELEGRAM_", "EMAIL_"))
        and key
        not in {
            "TEST_DATABASE_NAME",
            "CELERY_BROKER_URL",
            "CELERY_BROKER_KEY_PREFIX",
            "REDIS_URL",
            "CACHE_KEY_PREFIX",
            "DEBUG",
        }
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ENV_FILE": "",  # never a developer's .env (its Telegram token, its database)
            "PYTHONUNBUFFERED": "1",
            "DEBUG": "false",
            "SECRET_KEY": SECRET_KEY,
            "SITE_URL": site_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": database_url(database_name),
            # Short-lived connections: the test process truncates tables between tests.
            "CONN_MAX_AGE": "0",
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_BROKER_KEY_PREFIX": f"{KEY_PREFIX}-broker:",
            "REDIS_URL": REDIS_URL,
            "CACHE_KEY_PREFIX": f"{KEY_PREFIX}-cache",
            "VAR_DIR": str(workdir / "var"),
            "STATIC_ROOT": str(workdir / "static"),
            "MEDIA_ROOT": str(workdir / "media"),
            "DEFAULT_FROM_EMAIL": "Broadside <newsletter@broadside.test>",
            "STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_broadside_e2e",
            "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
            "LOG_LEVEL": "WARNING",
        }
    )
    if smtp_port is not None:
        env["EMAIL_URL"] = f"smtp://127.0.0.1:{smtp_port}"
    if stripe_api_base:
        env["STRIPE_API_BASE"] = stripe_api_base
    if telegram_api_url:
        env.update(
            {
                "TELEGRAM_API_URL": telegram_api_url,
                "TELEGRAM_BOT_TOKEN": TELEGRAM_BOT_TOKEN,
                "TELEGRAM_CHAT_ID": TELEGRAM_CHAT_ID,
            }
        )
    env.update(extra or {})
    return env


def spawn(name: str, args: list[str], *, env: dict[str, str], log_path: Path, **kwargs) -> Process:
    return Process(name, processes.spawn(args, env=env, log=log_path, **kwargs), log_path)


def spawn_collectstatic(*, env: dict[str, str], workdir: Path) -> Process:
    args = [str(BIN / "python"), "manage.py", "collectstatic", "--noinput", "-v", "0"]
    return spawn("collectstatic", args, env=env, log_path=workdir / "collectstatic.log")


def collect_static(env: dict[str, str]) -> None:
    manage(env, "collectstatic", "--noinput", "-v", "0")


def spawn_gunicorn(
    *,
    env: dict[str, str],
    sock: socket.socket,
    workdir: Path,
    workers: int = 2,
    threads: int = 1,
) -> Process:
    options = ["--timeout", "60", "--graceful-timeout", "5"]
    options += ["--error-logfile", "-", "--access-logfile", "-"]
    args = processes.gunicorn_command(sock=sock, workers=workers, threads=threads, options=options)
    log_path = workdir / "gunicorn.log"
    return spawn("gunicorn", args, env=env, log_path=log_path, pass_fds=(sock.fileno(),))


def wait_for_gunicorn(process: Process, site_url: str) -> None:
    health = f"{site_url}/healthz"

    def healthy() -> bool:
        process.check_alive()
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    wait_until(healthy, timeout=60, what=f"gunicorn to answer {health}")


def spawn_celery_worker(
    *, env: dict[str, str], workdir: Path, concurrency: int = 2, name: str = "e2e"
) -> Process:
    # Beat embedded, as production runs it beside the workers: it polls the Stripe
    # events' outbox, so webhooks are applied.
    args = processes.celery_worker_command(
        hostname=f"{name}-{os.getpid()}@%h",
        concurrency=concurrency,
        beat_schedule=workdir / f"celerybeat-{name}",
    )
    return spawn("celery worker", args, env=env, log_path=workdir / f"celery-{name}.log")


def wait_for_celery_worker(process: Process) -> None:
    def ready() -> bool:
        process.check_alive()
        return " ready." in process.log_tail(200)

    wait_until(ready, timeout=60, what="the celery worker to be ready")


def wait_for_exit(process: Process, timeout: float = 300) -> None:
    try:
        code = process.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{process.name} did not finish in {timeout:.0f}s") from exc
    if code != 0:
        raise HarnessError(f"{process.name} failed ({code}):\n{process.log_tail()}")


@contextmanager
def running_stack(
    *,
    database_name: str,
    workdir: Path,
    smtp_port: int | None = None,
    stripe_api_base: str | None = None,
    telegram_api_url: str | None = None,
    web_workers: int = 2,
    web_threads: int = 1,
    worker_concurrency: int = 2,
    with_worker: bool = True,
    static_collected: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """gunicorn and a celery worker on an existing, migrated database.

    Static files are collected while the celery worker boots, and gunicorn starts once
    they are written: whitenoise scans STATIC_ROOT as gunicorn loads the app, and a file
    half-written at that moment was served short (a 200 with 0 bytes) for the stack's
    whole life. The stack is handed over once all three are done. A caller that has
    collected them already says `static_collected=True`: collecting again would race
    the same scan, since the manifest storage deletes each hashed file before it writes
    it again.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    sock = bind_loopback()
    host, port = sock.getsockname()
    site_url = f"http://{host}:{port}"
    env = stack_env(
        database_name=database_name,
        site_url=site_url,
        workdir=workdir,
        smtp_port=smtp_port,
        stripe_api_base=stripe_api_base,
        telegram_api_url=telegram_api_url,
        extra=extra_env,
    )
    stack = Stack(site_url=site_url, env=env, workdir=workdir)
    collectstatic = None if static_collected else spawn_collectstatic(env=env, workdir=workdir)
    try:
        if with_worker:
            worker = spawn_celery_worker(env=env, workdir=workdir, concurrency=worker_concurrency)
            stack.processes.append(worker)
        try:
            if collectstatic is not None:
                wait_for_exit(collectstatic)
            web = spawn_gunicorn(
                env=env, sock=sock, workdir=workdir, workers=web_workers, threads=web_threads
            )
            stack.processes.append(web)
            sock.close()  # gunicorn holds its own copy
            wait_for_gunicorn(web, site_url)
            if with_worker:
                wait_for_celery_worker(worker)
        except (TimeoutError, HarnessError) as exc:
            raise HarnessError(f"The stack did not start: {exc}\n\n{stack.logs()}") from exc
        yield stack
    finally:
        if collectstatic is not None:
            collectstatic.stop()
        stack.stop()
        sock.close()


def create_database(name: str) -> None:
    """A fresh database for a stack that is not driven by pytest (bench/load.py)."""
    import psycopg

    drop_database(name)
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: dict[str, str]) -> None:
    """Create the schema with the project's migrations, as a deploy does."""
    manage(env, "migrate", "--noinput", "-v", "0")


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not (Path(path).exists() or shutil.which(path)):
        raise HarnessError(
            f"Chromium is not installed at {path}. Install Debian's package "
            "(`apt-get install -y chromium`, as .ci/run does) or set CHROMIUM to its path."
        )
    return path


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class CapturedMail:
    """What the capturing SMTP server (tests/fakes/smtp.py) received, parsed."""

    def __init__(self, server: FakeSMTPServer) -> None:
        self.server = server

    def clear(self) -> None:
        self.server.clear()

    def count(self) -> int:
        return self.server.received

    def all(self) -> list[tuple[list[str], EmailMessage]]:
        return [(list(m.rcpt_tos), m.message) for m in list(self.server.messages)]

    def to(self, address: str) -> list[EmailMessage]:
        address = address.lower()
        return [
            m.message
            for m in list(self.server.messages)
            if address in (r.lower() for r in m.rcpt_tos)
        ]

    def wait_for(self, *, to: str, subject_contains: str = "", timeout: float = 20) -> EmailMessage:
        def find() -> EmailMessage | None:
            for message in self.to(to):
                if subject_contains.lower() in str(message["Subject"] or "").lower():
                    return message
            return None

        found = wait_until(
            find, timeout=timeout, what=f"an email to {to} about {subject_contains!r}"
        )
        assert isinstance(found, EmailMessage)
        return found


def message_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def message_html(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    return part.get_content() if part is not None else ""


@contextmanager
def capturing_smtp_server() -> Iterator[tuple[int, CapturedMail]]:
    """An aiosmtpd server on 127.0.0.1 (kernel-picked port) that keeps what it receives."""
    with FakeSMTPServer() as server:
        yield server.port, CapturedMail(server)
