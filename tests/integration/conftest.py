"""The two configurations the delivery path must keep its promises on, as one fixture.

`stack` is parametrised: "postgresql+redis" is production's (pytest's PostgreSQL test
database, a Redis broker on the tests' Redis server, database 4, flushed before and
after); "sqlite+filesystem" is `make run`'s embedded default (a SQLite file built by
`manage.py migrate`, the filesystem broker under the stack's VAR_DIR). The test reads
and writes the stack's database through `stack.shell()` (a `manage.py shell` in the
stack's environment, for anything that needs the models) and `stack.query()` (plain
SQL over a connection of its own, for polling), so one test body runs on both.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import processes

POSTGRESQL_REDIS = "postgresql+redis"
SQLITE_FILESYSTEM = "sqlite+filesystem"


@dataclass
class Stack:
    name: str
    var_dir: Path
    database_url: str
    broker_url: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return self.name == SQLITE_FILESYSTEM

    def environment(self, **overrides: str) -> dict[str, str]:
        """The processes' environment: production settings on this stack's services."""
        return processes.worker_environment(
            var_dir=self.var_dir,
            broker_url=self.broker_url,
            DATABASE_URL=self.database_url,
            **overrides,
        )

    def shell(self, code: str, *, env: dict[str, str] | None = None) -> str:
        """Run Python in `manage.py shell` on this stack (in `env`, if given); its output."""
        result = processes.manage(
            "shell", "-v", "0", "-c", code, env=env or self.environment(), timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Plain SQL (no parameters) over a connection of the test's own."""
        if self.embedded:
            path = self.database_url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                return db.execute(sql).fetchall()
        with psycopg.connect(self.database_url, autocommit=True) as db:
            return db.execute(sql).fetchall()  # type: ignore[arg-type]

    def execute(self, sql: str) -> None:
        """One statement (no parameters), committed, over a connection of the test's own."""
        if self.embedded:
            path = self.database_url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
                db.execute(sql)
            return
        with psycopg.connect(self.database_url, autocommit=True) as db:
            db.execute(sql)  # type: ignore[arg-type]

    def start_worker(self, *, name: str, env: dict[str, str], concurrency: int = 2):
        """A `celery worker` with beat embedded (the sweeper runs every
        EMAIL_SWEEP_INTERVAL seconds), logging to the stack's directory."""
        log = self.var_dir.parent / f"{name}.log"
        worker = processes.start_celery_worker(
            env=env,
            log=log,
            hostname=f"{name}@%h",
            concurrency=concurrency,
            beat_schedule=log.with_suffix(".schedule"),
        )
        self.workers.append(worker)
        self.logs.append(log)
        return worker

    def log_tails(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs if p.exists())

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll until `condition()`; the seconds it took. Fails with the workers' logs."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if condition():
                return time.monotonic() - started
            time.sleep(0.05)
        pytest.fail(f"Timed out after {timeout} s waiting for {what}.\n{self.log_tails()}")

    def delivery_statuses(self, *, slug: str) -> dict[str, int]:
        rows = self.query(
            "SELECT d.status, COUNT(*) FROM newsletter_delivery d "  # noqa: S608 (a test's slug)
            "JOIN newsletter_emailsend s ON s.id = d.send_id "
            "JOIN newsletter_article a ON a.id = s.article_id "
            f"WHERE a.slug = '{slug}' GROUP BY d.status"
        )
        return dict(rows)

    def send_row(self, *, slug: str) -> tuple[str, int, int, int]:
        """(status, recipient_count, sent_count, failed_count) of an article's send."""
        rows = self.query(
            "SELECT s.status, s.recipient_count, s.sent_count, s.failed_count "  # noqa: S608
            "FROM newsletter_emailsend s JOIN newsletter_article a ON a.id = s.article_id "
            f"WHERE a.slug = '{slug}'"
        )
        return rows[0] if rows else ("", 0, 0, 0)

    def stop(self) -> None:
        for worker in self.workers:
            processes.kill(worker)


@pytest.fixture(params=[POSTGRESQL_REDIS, SQLITE_FILESYSTEM])
def stack(request, tmp_path) -> Iterator[Stack]:
    var_dir = tmp_path / "var"
    # A test using this fixture is marked django_db(transaction=True): the workers must
    # see the rows the test's processes committed in PostgreSQL.
    if request.param == POSTGRESQL_REDIS:
        with processes.flushed_redis(processes.redis_database_url(4)) as broker:
            built = Stack(
                request.param, var_dir, processes.current_database_url(), broker_url=broker
            )
            try:
                yield built
            finally:
                built.stop()
        return
    database = tmp_path / "broadside.sqlite3"
    built = Stack(request.param, var_dir, f"sqlite:///{database}", broker_url="filesystem://")
    migrated = processes.manage("migrate", "--noinput", env=built.environment())
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    try:
        yield built
    finally:
        built.stop()


_FILE_BACKEND_SEPARATOR = b"\n" + b"-" * 79 + b"\n"


def mail_file_recipients(mail_dir: Path) -> list[str]:
    """The To address of every message Django's file email backend wrote to `mail_dir`
    (one file per connection, messages separated by a line of 79 dashes)."""
    recipients = []
    for path in sorted(mail_dir.glob("*.log")) if mail_dir.exists() else []:
        for chunk in path.read_bytes().split(_FILE_BACKEND_SEPARATOR):
            if chunk.strip():
                message = email.message_from_bytes(chunk, policy=email.policy.default)
                recipients.append(str(message["To"]))
    return recipients


# --- the audience every send test mails, and the tally at the mail server -------------


def audience_setup(*, readers: int, paid: int, slug: str, ineligible_each: int) -> str:
    """A `manage.py shell` script: `readers` active readers of whom `paid` are paid
    (`reader0000@`..., `paid00@`...), `ineligible_each` pending, unsubscribed, bounced and
    complained ones who must get nothing, and a paid article `slug` with a paywall."""
    return f"""
from newsletter.models import Article
from subscriptions.models import Subscriber
from tests.factories import ArticleFactory, MembershipFactory
Subscriber.objects.bulk_create(
    Subscriber(email=f"reader{{i:04d}}@example.com", status="active")
    for i in range({readers - paid})
)
for i in range({paid}):
    MembershipFactory(subscriber__email=f"paid{{i:02d}}@example.com")
Subscriber.objects.bulk_create(
    Subscriber(email=f"{{status}}{{i}}@example.com", status=status)
    for status in ("pending", "unsubscribed", "bounced", "complained")
    for i in range({ineligible_each})
)
ArticleFactory(
    slug="{slug}",
    body='<p>Free part.</p><hr class="paywall"><p>Paid part.</p>',
    visibility=Article.Visibility.PAID,
)
"""


def publish_script(slug: str) -> str:
    """A `manage.py shell` one-liner that publishes `slug` as an editor would."""
    return (
        "from newsletter.models import Article; "
        "from newsletter.services.publishing import publish_article; "
        f"publish_article(article=Article.objects.get(slug='{slug}'))"
    )


def eligible_addresses(*, readers: int, paid: int) -> set[str]:
    """Everyone `audience_setup` made who should get the article."""
    free = {f"reader{i:04d}@example.com" for i in range(readers - paid)}
    return free | {f"paid{i:02d}@example.com" for i in range(paid)}


def second_copies(recipients: Iterable[str]) -> dict[str, int]:
    """The addresses the mail server took more than once, with how many times."""
    return {address: n for address, n in Counter(recipients).items() if n > 1}
