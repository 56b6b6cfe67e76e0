"""A real Celery worker posts to the local Bot API stand-in: retry_after waited out,
a task delivered twice posts once.

Real components: the pytest PostgreSQL database (transactional, so the worker sees the
rows), Redis database 5 as the broker (flushed before and after), a `celery worker`
subprocess with two prefork processes, and the stand-in Bot API on loopback.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from config.celery import app as celery_app
from newsletter.models import TelegramPost
from newsletter.tasks import post_article_to_telegram
from tests import processes
from tests.factories import PublishedArticleFactory
from tests.fakes.telegram_api import FakeTelegramAPI

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REDIS_URL = processes.redis_database_url(5)
CHANNEL = "@broadside"


@pytest.fixture
def redis_broker():
    with processes.flushed_redis(REDIS_URL) as url:
        yield url


@pytest.fixture
def bot_api():
    with FakeTelegramAPI(chats=[CHANNEL]) as api:
        yield api


@pytest.fixture
def worker(tmp_path, redis_broker, bot_api):
    env = processes.worker_environment(
        var_dir=tmp_path / "var",
        broker_url=redis_broker,
        TELEGRAM_BOT_TOKEN=bot_api.token,
        TELEGRAM_CHAT_ID=CHANNEL,
        TELEGRAM_API_URL=bot_api.url,
        TELEGRAM_TIMEOUT="2",
    )
    log = tmp_path / "worker.log"
    process = processes.start_celery_worker(env=env, log=log, hostname="telegram@%h")
    celery_app.conf.task_always_eager = False
    yield log
    celery_app.conf.task_always_eager = True
    processes.stop(process)


def _queue(post: TelegramPost) -> None:
    with celery_app.connection_for_write(REDIS_URL) as broker:
        post_article_to_telegram.apply_async(args=[post.pk], connection=broker)


def _wait_until_sent(post: TelegramPost, log: Path, timeout: float = 40) -> TelegramPost:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        post.refresh_from_db()
        if post.status == TelegramPost.Status.SENT:
            return post
        time.sleep(0.05)
    pytest.fail(f"The post was not sent in time.\n{log.read_text(errors='replace')[-3000:]}")


def test_a_real_worker_waits_out_retry_after_before_posting_again(worker, bot_api):
    bot_api.fail_next("retry_after", retry_after=2)
    post = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)

    _queue(post)
    post = _wait_until_sent(post, worker)

    first, second = bot_api.calls()
    assert (first.answered, second.answered) == (429, 200)
    assert second.at - first.at >= 2  # Celery's countdown, not a busy loop
    assert post.attempts == 2
    assert len(bot_api.posts()) == 1


def test_a_task_delivered_twice_to_two_worker_processes_posts_once(worker, bot_api):
    bot_api.answer_delay = 0.5  # both deliveries are in flight together
    post = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)

    _queue(post)
    _queue(post)
    post = _wait_until_sent(post, worker)
    time.sleep(1)  # let the second delivery finish too

    assert len(bot_api.calls("sendMessage")) == 1
    assert len(bot_api.posts()) == 1
    post.refresh_from_db()
    assert post.attempts == 1
