"""Stripe events accepted while the broker is down are applied once it is back, in order
per Stripe object, on both stacks.

gunicorn (production's settings) accepts a burst of signed events, with redeliveries,
while no worker runs; on the Redis stack its broker URL points at a port nothing
listens on, so a request that touched the broker would fail or hang. Then workers with
beat embedded start on the real broker and drain the outbox side by side.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request

import pytest

from tests import processes
from tests.subscriptions.stripe_support import WEBHOOK_SECRET, signature_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

OBJECTS = 6
EVENTS_PER_OBJECT = 30
DUPLICATES = 40
# A type no handler acts on: applying it only marks it processed, so the order in which
# they were applied is what the test reads.
EVENT_TYPE = "customer.tax_id.updated"


def _events() -> list[dict]:
    """Events for OBJECTS objects, interleaved; several share each second of `created`."""
    start = int(time.time()) - 3600
    events = []
    for n in range(EVENTS_PER_OBJECT):
        for obj in range(OBJECTS):
            events.append(
                {
                    "id": f"evt_outbox_{obj}_{n:03d}",
                    "object": "event",
                    "type": EVENT_TYPE,
                    "created": start + n // 3,
                    "livemode": False,
                    "data": {"object": {"id": f"txi_outbox_{obj}", "object": "tax_id"}},
                }
            )
    return events


def _post(url: str, event: dict) -> int:
    body = json.dumps(event)
    request = urllib.request.Request(
        f"{url}/stripe/webhook/",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": signature_for(body)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_events_accepted_while_the_broker_is_down_are_applied_after_in_order_per_object(
    stack, tmp_path
):
    settings = {
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_SECRET_KEY": "sk_test_outbox_not_called",
        "STRIPE_OUTBOX_POLL_SECONDS": "0.3",
    }
    broker_down = (
        "filesystem://" if stack.embedded else f"redis://127.0.0.1:{processes.free_port()}/0"
    )
    web_env = stack.environment(**settings, CELERY_BROKER_URL=broker_down)
    sock = processes.bind_loopback()
    host, port = sock.getsockname()
    web = processes.start_gunicorn(
        env=web_env, log=tmp_path / "gunicorn.log", sock=sock, workers=2, threads=1
    )
    sock.close()
    stack.workers.append(web)
    url = f"http://{host}:{port}"
    stack.wait(lambda: _answers(url), timeout=60, what="gunicorn to answer")

    events = _events()
    deliveries = events + random.Random(18).sample(events, DUPLICATES)
    random.Random(19).shuffle(deliveries[len(events) :])
    statuses = [_post(url, event) for event in deliveries]

    assert statuses == [200] * len(deliveries)
    rows = stack.query("SELECT COUNT(*), COUNT(processed_at) FROM subscriptions_stripeevent")
    assert rows == [(len(events), 0)]  # stored once each, nothing applied in the request

    stack.start_worker(name="drain-a", env=stack.environment(**settings), concurrency=3)
    stack.start_worker(name="drain-b", env=stack.environment(**settings), concurrency=3)
    stack.wait(
        lambda: (
            stack.query("SELECT COUNT(*) FROM subscriptions_stripeevent WHERE processed_at IS NULL")
            == [(0,)]
        ),
        timeout=120,
        what="every accepted event to be applied",
    )

    applied = stack.query(
        "SELECT object_id, stripe_id, processed_at, attempts, error "
        "FROM subscriptions_stripeevent ORDER BY object_id, created, id"
    )
    assert {(attempts, error) for *_, attempts, error in applied} == {(1, "")}
    for obj in range(OBJECTS):
        lane = [row for row in applied if row[0] == f"txi_outbox_{obj}"]
        assert [row[1] for row in lane] == [
            f"evt_outbox_{obj}_{n:03d}" for n in range(EVENTS_PER_OBJECT)
        ]
        times = [row[2] for row in lane]
        assert times == sorted(times), f"txi_outbox_{obj} applied out of order"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/robots.txt", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
