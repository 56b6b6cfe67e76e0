"""The article page under a growing discussion, and comment counts on a list.

    .venv/bin/python bench/comments.py [--sizes 0,50,500,2000] [--requests 20]

Runs in-process against PostgreSQL (DATABASE_URL, as the tests do) on a database of its
own (`bench_broadside_comments`, created here and dropped at the end) and prints, for
each number of comments under one article:

- SQL queries per article page (anonymous and signed-in reader): should not grow;
- median and p95 milliseconds to render the page through the Django test client;
- milliseconds per reader of `comment_thread` alone (the service behind the thread),
  which shows THREAD_PAGE_SIZE top-level comments (with their replies) per page.

Then the time and query count of `with_comment_counts` over 100 articles.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["TEST_DATABASE_NAME"] = "bench_broadside_comments"

import django  # noqa: E402

django.setup()

from _schema import schema_from_models  # noqa: E402  (bench/, the script's folder)
from django.conf import settings  # noqa: E402
from django.core.signals import request_started  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402


def _timed_gets(client: Client, url: str, count: int) -> tuple[float, float, int]:
    durations = []
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    query_count = len(queries)
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(url)
        durations.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.status_code
    durations.sort()
    p95 = durations[max(0, int(len(durations) * 0.95) - 1)]
    return statistics.median(durations), p95, query_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,50,500,2000")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # Count the queries of a whole request: Django empties the log when one starts.
    request_started.disconnect(reset_queries)
    with schema_from_models():
        run(sizes=sizes, requests=args.requests)


def run(*, sizes: list[int], requests: int) -> None:
    from newsletter.models import Article, Comment
    from newsletter.services import comments as comment_service
    from tests.factories import PublishedArticleFactory, UserFactory

    readers = UserFactory.create_batch(50)
    reader_client = Client()
    reader_client.force_login(readers[0])
    anonymous = Client()

    print(
        f"{'comments':>8} {'queries anon/reader':>20} {'anon ms p50/p95':>16} "
        f"{'reader ms p50/p95':>18} {'thread ms':>10}"
    )
    for size in sizes:
        article = PublishedArticleFactory()
        now = timezone.now()
        top_level = [
            Comment(article=article, user=readers[n % 50], body=f"Comment {n} " * 20)
            for n in range(size - size // 3)
        ]
        Comment.objects.bulk_create(top_level)
        Comment.objects.bulk_create(
            [
                Comment(
                    article=article,
                    user=readers[(n + 7) % 50],
                    parent=top_level[n % len(top_level)],
                    body=f"A reply {n}, see https://example.org/{n}",
                )
                for n in range(size // 3)
            ]
        )
        Comment.objects.filter(article=article).update(created_at=now)
        url = f"/p/{article.slug}/"
        anon_p50, anon_p95, anon_q = _timed_gets(anonymous, url, requests)
        reader_p50, reader_p95, reader_q = _timed_gets(reader_client, url, requests)
        start = time.perf_counter()
        for _ in range(requests):
            comment_service.comment_thread(article=article, user=readers[0])
        thread_ms = (time.perf_counter() - start) * 1000 / requests
        print(
            f"{size:>8} {f'{anon_q}/{reader_q}':>20} {f'{anon_p50:.1f}/{anon_p95:.1f}':>16} "
            f"{f'{reader_p50:.1f}/{reader_p95:.1f}':>18} {thread_ms:>10.1f}"
        )

    articles = PublishedArticleFactory.create_batch(100)
    Comment.objects.bulk_create(
        [
            Comment(article=articles[n % 100], user=readers[n % 50], body="Counted")
            for n in range(5000)
        ]
    )
    queryset = comment_service.with_comment_counts(Article.objects.all())
    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        counted = list(queryset)
        elapsed = (time.perf_counter() - start) * 1000
    print(
        f"with_comment_counts over {len(counted)} articles (5,000 comments on 100): "
        f"{elapsed:.1f} ms, {len(queries.captured_queries)} query"
    )


if __name__ == "__main__":
    main()
