"""A send through a restart of its PostgreSQL server (`pg_ctl restart -m fast`, as a
planned restart or a failover does it: every connection is closed mid-send).

Its own PostgreSQL cluster (initdb on a free port, in a directory of its own under the
system's temporary directory, removed afterwards; as the `postgres` user when the tests
run as root, since PostgreSQL refuses to run as root),
a database built by `manage.py migrate`, Redis database 4 of the tests' Redis server as
broker, two `celery worker -B` processes and a capturing SMTP server. The restart lands
while both workers are mid-chunk, so every sent-mark after it is first tried on a
connection the server closed, and must be written again over a new one.
"""

from __future__ import annotations

import collections
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests import processes
from tests.fakes.smtp import FakeSMTPServer
from tests.integration.conftest import POSTGRESQL_REDIS, Stack, second_copies
from tests.integration.test_send_crash import PUBLISH, READERS, SETUP, SLUG
from tests.integration.test_send_faults import ELIGIBLE

pytestmark = pytest.mark.integration

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), "")


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.data = directory / "data"
        self.port = processes.free_port()
        self.log = directory / "postgresql.log"
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")

    def ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-l", str(self.log), *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        initdb = [f"{PG_BIN}/initdb", "-D", str(self.data), "-U", "postgres"]
        subprocess.run(
            _as_postgres([*initdb, "--auth=trust", "--no-sync"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl("-o", options, "-w", "start")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def own_postgresql():
    if not PG_BIN:
        pytest.fail("PostgreSQL's server programs (initdb, pg_ctl) are not installed.")
    # Not pytest's tmp_path: its parents are private to the user running the tests.
    directory = Path(tempfile.mkdtemp(prefix="broadside-pg-"))
    cluster = Cluster(directory)
    try:
        cluster.start()
        yield cluster
        cluster.ctl("-m", "immediate", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_send_finishes_through_a_database_restart_with_no_second_copies(tmp_path, own_postgresql):
    smtp = FakeSMTPServer().start()
    smtp.data_delay = 0.005
    with processes.flushed_redis(processes.redis_database_url(4)) as broker:
        stack = Stack(POSTGRESQL_REDIS, tmp_path / "var", own_postgresql.url, broker)
        env = stack.environment(
            EMAIL_URL=smtp.url,
            EMAIL_SEND_CHUNK_SIZE="50",
            EMAIL_SEND_PARALLELISM="2",
            EMAIL_CLAIM_TIMEOUT="3",
            EMAIL_SWEEP_INTERVAL="0.5",
            CELERY_VISIBILITY_TIMEOUT="10",
        )
        try:
            migrated = processes.manage("migrate", "--noinput", env=env)
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            stack.shell(SETUP, env=env)
            stack.start_worker(name="first", env=env, concurrency=1)
            stack.start_worker(name="second", env=env, concurrency=1)
            # Both workers mid-chunk, waiting at RCPT TO with their connections idle,
            # when the server restarts; the messages after it need their marks written
            # over new connections.
            smtp.hold_after(READERS // 3)
            stack.shell(PUBLISH, env=env)
            stack.wait(lambda: smtp.held >= 2, 60, "both workers to be mid-chunk")

            own_postgresql.ctl("-m", "fast", "-w", "restart")
            restarted_at = time.monotonic()
            smtp.release()
            stack.wait(lambda: stack.send_row(slug=SLUG)[0] == "sent", 90, "the send to finish")
            finished = time.monotonic() - restarted_at
        finally:
            stack.stop()
            smtp.stop()

    received = collections.Counter(smtp.recipients())
    duplicates = second_copies(received.elements())
    print(
        f"database restart: {READERS} readers, missing {len(ELIGIBLE - set(received))}, "
        f"duplicated {len(duplicates)}, restart to finished {finished:.1f} s"
    )
    assert set(received) == ELIGIBLE
    assert duplicates == {}
    assert stack.send_row(slug=SLUG) == ("sent", READERS, READERS, 0)
