"""A send finishes through a restart of its Redis broker, with nobody restarting workers.

Its own `redis-server` (on a free port, keeping nothing on disk: the restarted server
has lost every queued task, the worst case), two `celery worker -B` processes of four
pool processes each (production's concurrency) on pytest's PostgreSQL test database,
and a capturing SMTP server slow enough that chunk tasks are running, unacknowledged,
when Redis goes away for five seconds, and end while it is away or just back. Without
config/broker.py's guard both workers exit "Unrecoverable error: AttributeError" here.
"""

from __future__ import annotations

import time

import pytest

from tests import processes
from tests.fakes.smtp import FakeSMTPServer
from tests.integration.conftest import eligible_addresses, second_copies
from tests.integration.test_send_crash import PUBLISH, READERS, SETUP, SLUG

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def own_redis(tmp_path):
    port = processes.free_port()
    servers = [processes.start_redis_server(port=port, log=tmp_path / "redis.log")]

    def restart() -> None:
        processes.kill(servers[-1])
        time.sleep(5.0)  # down for a few seconds: every worker's connection is gone
        servers.append(processes.start_redis_server(port=port, log=tmp_path / "redis.log"))

    yield f"redis://127.0.0.1:{port}/0", restart
    for server in servers:
        processes.kill(server)


@pytest.fixture
def postgresql_stack(tmp_path):
    from tests.integration.conftest import POSTGRESQL_REDIS, Stack

    built = Stack(POSTGRESQL_REDIS, tmp_path / "var", processes.current_database_url(), "")
    yield built
    built.stop()


def test_a_send_finishes_through_a_broker_restart_without_anyone_restarting_workers(
    postgresql_stack, own_redis
):
    stack = postgresql_stack
    broker, restart_broker = own_redis
    stack.broker_url = broker
    smtp = FakeSMTPServer().start()
    try:
        env = stack.environment(
            EMAIL_URL=smtp.url,
            EMAIL_SEND_CHUNK_SIZE="50",
            EMAIL_SEND_PARALLELISM="2",
            EMAIL_CLAIM_TIMEOUT="3",
            EMAIL_SWEEP_INTERVAL="0.5",
            CELERY_VISIBILITY_TIMEOUT="10",
        )
        stack.shell(SETUP, env=env)
        stack.start_worker(name="first", env=env, concurrency=4)
        stack.start_worker(name="second", env=env, concurrency=4)
        smtp.data_delay = 0.01  # a chunk takes half a second: tasks end while Redis is down
        stack.shell(PUBLISH, env=env)
        stack.wait(lambda: smtp.received >= READERS // 4, 60, "a quarter of the mail")

        restart_broker()
        restarted_at = time.monotonic()
        stack.wait(lambda: stack.send_row(slug=SLUG)[0] == "sent", 90, "the send to finish")
        recovery = time.monotonic() - restarted_at
        alive = [worker.poll() is None for worker in stack.workers]
    finally:
        stack.stop()
        smtp.release()
        smtp.stop()

    received = smtp.recipients()
    eligible = eligible_addresses(readers=READERS, paid=50)
    duplicates = second_copies(received)
    print(
        f"broker restart: {READERS} readers, missing {len(eligible - set(received))}, "
        f"duplicated {len(duplicates)}, restart to finished {recovery:.1f} s, "
        f"workers alive {alive}"
    )
    assert alive == [True, True], stack.log_tails()
    assert duplicates == {}
    assert set(received) == eligible
    assert stack.send_row(slug=SLUG) == ("sent", READERS, READERS, 0)
