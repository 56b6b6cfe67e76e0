"""Opens and clicks through a real gunicorn on both configurations.

Production's (PostgreSQL, and Redis as cache and broker): a hit is a push onto Redis,
written to the database by the beat task (`flush-tracking-hits`, run here by a worker
with beat embedded). `make run`'s embedded default (SQLite, the file cache, the
filesystem broker): written in the request. Either way the figures count the reader
once and Apple's proxy apart, and the redirect goes where the token says.
"""

from __future__ import annotations

import http.client
import json

import pytest

from tests import processes
from tests.integration.conftest import POSTGRESQL_REDIS

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SETUP = """
import json
from datetime import timedelta
from django.utils import timezone
from newsletter.models import Delivery, EmailSend, TrackedLink
from newsletter.services import tracking
from tests.factories import ArticleFactory, SubscriberFactory
article = ArticleFactory(slug="tracked")
send = EmailSend.objects.create(article=article, audience="everyone", status="sent", sent_count=1)
delivery = Delivery.objects.create(
    send=send, subscriber=SubscriberFactory(), status="sent",
    sent_at=timezone.now() - timedelta(hours=1),
)
url = "https://example.org/report?a=1&b=2"
link = TrackedLink.objects.create(article=article, url=url, digest="x")
part = tracking.delivery_token(delivery.pk)
print(json.dumps({
    "pixel": f"/o/{part}.gif",
    "click": f"/r/{tracking.link_token(link_id=link.pk, url=url)}.{part}/",
}))
"""

FIGURES = """
import json
from newsletter.models import Article
from newsletter.services.engagement import article_engagement
f = article_engagement(article=Article.objects.get(slug="tracked"))
print(json.dumps([f.opened_readers, f.machine_opens, f.clicked_readers, f.human_clicks]))
"""


def get(port: int, path: str, agent: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"User-Agent": agent, "Host": "127.0.0.1"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_opens_and_clicks_are_recorded_through_gunicorn_on_both_configurations(stack, tmp_path):
    overrides = {"ALLOWED_HOSTS": "127.0.0.1", "TRACKING_FLUSH_INTERVAL": "0.3"}
    if stack.name == POSTGRESQL_REDIS:
        overrides["REDIS_URL"] = processes.redis_database_url(5)
        overrides["CACHE_KEY_PREFIX"] = "tracking-stack"
    env = stack.environment(**overrides)
    paths = json.loads(stack.shell(SETUP, env=env).strip().splitlines()[-1])
    sock = processes.bind_loopback()
    port = sock.getsockname()[1]
    log = tmp_path / "gunicorn.log"
    # The production web line's access log (Procfile): opens and clicks are never in it.
    logging = ("--access-logfile", "-", "--logger-class", "config.gunicorn_logging.AccessLogger")
    web = processes.start_gunicorn(
        env=env, log=log, sock=sock, workers=1, threads=2, options=logging
    )
    stack.workers.append(web)
    stack.logs.append(log)
    try:
        stack.wait(
            lambda: _answers(port), 30, "gunicorn to answer"
        )  # fmt: skip
        person = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Thunderbird/128.0"
        opened = get(port, paths["pixel"], person)
        assert opened.status == 200
        assert opened.getheader("Content-Type") == "image/gif"
        assert get(port, paths["pixel"], "Mozilla/5.0").status == 200  # Apple's proxy
        clicked = get(port, paths["click"], person)
        assert clicked.status == 302
        assert clicked.getheader("Location") == "https://example.org/report?a=1&b=2"
        assert get(port, paths["click"][:-3] + "xx/", person).status == 400
        e12 = "%C3%A9" * 12  # twelve "é": a non-ASCII token is refused, not a 500
        assert get(port, f"/o/{e12}AQ.gif", person).status == 400
        assert get(port, paths["click"].rsplit(".", 1)[0] + f".{e12}/", person).status == 400

        if stack.name == POSTGRESQL_REDIS:
            assert stack.query("SELECT COUNT(*) FROM newsletter_openevent") == [(0,)]
            stack.start_worker(name="worker", env=env, concurrency=1)
        stack.wait(
            lambda: (
                stack.query("SELECT COUNT(*) FROM newsletter_openevent") == [(2,)]
                and stack.query("SELECT COUNT(*) FROM newsletter_clickevent") == [(1,)]
            ),
            60,
            "the hits in the database",
        )
        figures = json.loads(stack.shell(FIGURES, env=env).strip().splitlines()[-1])
    finally:
        stack.stop()
    assert figures == [1, 1, 1, 1]
    logged = log.read_text()
    assert '"GET /healthz HTTP/1.1" 200' in logged
    assert "/o/" not in logged and "/r/" not in logged


def _answers(port: int) -> bool:
    try:
        return get(port, "/healthz", "probe").status < 500
    except OSError:
        return False
