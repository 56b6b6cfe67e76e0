"""The project's own processes, started for tests and benchmarks and stopped again.

A `celery worker` pointed at pytest's test database and a Redis broker, gunicorn on a
loopback socket the caller bound, each in a session of its own so that stopping (or
killing) it reaches the children it forked and nothing else.

Importable without Django or pytest configured (bench scripts use it too); the helpers
that read the test settings import them when called.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def bind_loopback() -> socket.socket:
    """A listening TCP socket on 127.0.0.1 with a port the kernel picked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def spawn(
    args: Sequence[str], *, env: dict[str, str], log: Path, **popen_kwargs: Any
) -> subprocess.Popen[bytes]:
    """Start `args` in the project directory, output appended to `log`.

    The process leads its own session, so stop() and kill() reach its children too.
    """
    with log.open("ab") as output:
        return subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen_kwargs,
        )


def manage(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`manage.py *args` in the project directory, its output captured; the caller
    looks at the return code."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop(process: subprocess.Popen[bytes], *, timeout: float = 15) -> None:
    """SIGTERM to the process and its children; SIGKILL if they outlive `timeout`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process, timeout=timeout)


def kill(process: subprocess.Popen[bytes], *, timeout: float = 10) -> None:
    """SIGKILL to the process and its children at once, as a crash would end them."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


# --- a celery worker on the test database ---------------------------------------------


# The Redis server the tests use, without a database number: TEST_REDIS_URL lets runs
# in several checkouts at once each point at a redis-server of their own, since tests
# flush the databases they use (4 to 7).
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


def redis_database_url(db: int) -> str:
    """The URL of database `db` (4 to 7) on the tests' Redis server.

    Runs side by side in slots (tests/slots.py) each get four databases of their own:
    slot 1 has 8 to 11, slot 2 12 to 15, slot 3 0 to 3 (slot 0 and a run without slots
    keep 4 to 7). Called when a test needs the URL, never at import: mutmut imports the
    tests once, before each run takes its slot.
    """
    from tests import slots

    assert 4 <= db <= 7, f"the tests' Redis databases are 4 to 7, not {db}"
    slot = slots.current()
    if slot > 3:
        raise RuntimeError("Redis has databases for 4 slots (TEST_DATABASE_SLOTS) at most.")
    return f"{TEST_REDIS_URL}/{(db + 4 * slot) % 16}"


def redis_available(url: str = TEST_REDIS_URL) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def flushed_redis(url: str) -> Iterator[str]:
    """A Redis database for a broker, emptied before and after; fails clearly without Redis."""
    import pytest
    import redis

    if not redis_available(url):
        pytest.fail(f"Redis is not running at {TEST_REDIS_URL}: start it (see README).")
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def current_database_url() -> str:
    """DATABASE_URL of the database this process is connected to (pytest's test database)."""
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_environment(*, var_dir: Path, broker_url: str, **overrides: str) -> dict[str, str]:
    """The production settings module on the test database, with this run's SECRET_KEY
    and SITE_URL, queues on `broker_url`, and none of pytest's variables; `overrides`
    are further settings (EMAIL_URL, TELEGRAM_API_URL, ...)."""
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "TEST_"))}
    for name in ("REDIS_URL", "EMAIL_BACKEND"):
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        ENV_FILE="",  # never a developer's .env (its Telegram token, its database)
        DATABASE_URL=current_database_url(),
        CELERY_BROKER_URL=broker_url,
        SECRET_KEY=settings.SECRET_KEY,
        DEBUG="false",
        SITE_URL=settings.SITE_URL,
        VAR_DIR=str(var_dir),
        # Short-lived connections: the test process truncates tables between tests.
        CONN_MAX_AGE="0",
    )
    env.update(overrides)
    return env


def celery_worker_command(
    *, hostname: str, concurrency: int = 2, beat_schedule: Path | None = None
) -> list[str]:
    """`celery worker` with prefork processes; with `beat_schedule`, beat embedded (-B)
    so the periodic tasks (the sweeper) run too."""
    command = [sys.executable, "-m", "celery", "-A", "config", "worker"]
    command += ["--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", "INFO"]
    command += ["--hostname", hostname, "--without-gossip", "--without-mingle"]
    if beat_schedule is not None:
        command += ["-B", "--schedule", str(beat_schedule)]
    return command


def start_celery_worker(
    *,
    env: dict[str, str],
    log: Path,
    hostname: str,
    concurrency: int = 2,
    beat_schedule: Path | None = None,
) -> subprocess.Popen[bytes]:
    command = celery_worker_command(
        hostname=hostname, concurrency=concurrency, beat_schedule=beat_schedule
    )
    return spawn(command, env=env, log=log)


# --- gunicorn -------------------------------------------------------------------------


def gunicorn_command(
    *, sock: socket.socket, workers: int, threads: int, options: Sequence[str] = ()
) -> list[str]:
    """gunicorn serving config.wsgi on an inherited socket (pass_fds=(sock.fileno(),))."""
    command = [str(BIN / "gunicorn"), "config.wsgi", "--bind", f"fd://{sock.fileno()}"]
    command += ["--workers", str(workers), "--threads", str(threads)]
    # One control socket per user would clash between parallel runs.
    command += ["--no-control-socket", *options]
    return command


def start_gunicorn(
    *,
    env: dict[str, str],
    log: Path,
    sock: socket.socket,
    workers: int,
    threads: int,
    options: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    command = gunicorn_command(sock=sock, workers=workers, threads=threads, options=options)
    return spawn(command, env=env, log=log, pass_fds=(sock.fileno(),))


# --- a redis-server of a test's own -----------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(*, port: int, log: Path) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on `port` that keeps nothing on disk (a restart starts it
    empty, the worst case for queued tasks); returns once it answers."""
    import time

    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(log.parent)]
    process = spawn(
        command,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log=log,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_available(f"redis://127.0.0.1:{port}"):
            return process
        time.sleep(0.05)
    kill(process)
    raise RuntimeError(f"redis-server did not start on port {port}; see {log}")
