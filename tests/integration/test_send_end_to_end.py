"""A real send on both configurations: every reader gets the article once, the send ends
"sent" with the right counts, and nothing goes out again after the claims' lease.

Real processes: `celery worker -B` (beat embedded runs the sweeper every half second) on
the stack's database and broker. Mail goes where each configuration sends it: to a
capturing SMTP server on production's stack (which answers slowly enough that every
chunk outlives its lease, so only the worker's renewals keep it), and into `var/mail/`
through Django's file backend on `make run`'s. The claims' lease is one second: a mark
that did not land would show as a second copy within the test.
"""

from __future__ import annotations

import collections
import time

import pytest

from tests.fakes.smtp import FakeSMTPServer
from tests.integration.conftest import (
    POSTGRESQL_REDIS,
    audience_setup,
    eligible_addresses,
    mail_file_recipients,
    publish_script,
    second_copies,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

READERS = 300
SLUG = "end-to-end"

SETUP = audience_setup(readers=READERS, paid=10, slug=SLUG, ineligible_each=1)
PUBLISH = publish_script(SLUG)
LEASE = 1.0


def test_every_reader_gets_the_article_once_and_nothing_is_resent_after_the_lease(stack, tmp_path):
    smtp = None
    if stack.name == POSTGRESQL_REDIS:
        smtp = FakeSMTPServer().start()
        smtp.data_delay = 0.03  # a chunk of 50 takes 1.5 s, longer than its lease
        mail = {"EMAIL_URL": smtp.url}
    else:
        mail = {}  # make run's file backend: var/mail/

    def recipients() -> list[str]:
        if smtp is not None:
            return smtp.recipients()
        return mail_file_recipients(stack.var_dir / "mail")

    env = stack.environment(
        EMAIL_SEND_CHUNK_SIZE="50",
        EMAIL_SEND_PARALLELISM="2",
        EMAIL_CLAIM_TIMEOUT=str(LEASE),
        EMAIL_SWEEP_INTERVAL="0.5",
        **mail,
    )
    try:
        stack.shell(SETUP, env=env)
        stack.start_worker(name="worker", env=env)
        started = time.monotonic()
        stack.shell(PUBLISH, env=env)

        stack.wait(lambda: stack.send_row(slug=SLUG)[0] == "sent", 120, "the send to finish")
        finished = time.monotonic() - started
        # Several leases and sweeps later, nobody has had a second copy.
        time.sleep(4 * LEASE)
        received = collections.Counter(recipients())
    finally:
        stack.stop()
        if smtp is not None:
            smtp.stop()

    expected = eligible_addresses(readers=READERS, paid=10)
    duplicates = second_copies(received.elements())
    print(f"{stack.name}: {READERS} readers in {finished:.1f} s, duplicates {len(duplicates)}")
    assert duplicates == {}
    assert set(received) == expected
    assert stack.delivery_statuses(slug=SLUG) == {"sent": READERS}
    assert stack.send_row(slug=SLUG) == ("sent", READERS, READERS, 0)
    for log in stack.logs:
        text = log.read_text(errors="replace")
        assert "raised unexpected" not in text
        assert "could not be recorded as sent" not in text
