"""Fixtures shared by every test."""

from __future__ import annotations

import os
import re

import pytest
from django.core.cache import cache

from config import generations
from config.celery import app as celery_app
from tests import slots as test_slots


@pytest.fixture(autouse=True)
def _isolated_settings(settings, tmp_path):
    """Per-test cache and media, eager Celery tasks, static files without a manifest."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    cache.clear()
    # The process's memo of generation-keyed values mirrors the cache: emptied with it
    # (a test's clock may be frozen, so a generation started from it could recur).
    generations.memo.clear()
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    cache.clear()
    generations.memo.clear()


@pytest.fixture
def telegram_api(settings):
    """A local Telegram Bot API stand-in, with the TELEGRAM_* settings pointing at it."""
    from tests.fakes.telegram_api import FakeTelegramAPI

    with FakeTelegramAPI(chats=["@broadside", "-1001234567890"], hang_seconds=3) as api:
        settings.TELEGRAM_BOT_TOKEN = api.token
        settings.TELEGRAM_CHAT_ID = "@broadside"
        settings.TELEGRAM_API_URL = api.url
        settings.TELEGRAM_TIMEOUT = 0.5
        yield api


@pytest.fixture
def stripe_api(settings):
    """A local Stripe API stand-in, with the STRIPE_* settings (and a webhook secret) set."""
    from tests.fakes.stripe_api import FakeStripeAPI

    with FakeStripeAPI() as api:
        settings.STRIPE_SECRET_KEY = "sk_test_broadside_0123456789"
        settings.STRIPE_WEBHOOK_SECRET = "whsec_test_broadside_0123456789"
        settings.STRIPE_API_BASE = api.url
        yield api


@pytest.fixture
def plans_on_sale(stripe_api):
    """Stripe configured and a priced plan: the site and emails offer upgrades."""
    from tests.factories import PlanFactory

    return [PlanFactory()]


@pytest.fixture
def paid_reader_client(client):
    """The test client, signed in as a reader with an active paid membership."""
    from tests.factories import MembershipFactory, SubscriberFactory, UserFactory

    user = UserFactory()
    MembershipFactory(subscriber=SubscriberFactory(email=user.email, user=user))
    client.force_login(user)
    return client


@pytest.fixture
def editor_client(client):
    """The test client, signed in to the admin as an editor (`editor`, editor@example.com)."""
    from tests.factories import StaffUserFactory

    client.force_login(StaffUserFactory(username="editor"))
    return client


def pytest_configure(config: pytest.Config) -> None:
    """With TEST_DATABASE_SLOTS=N, each test run takes one of N slots (tests/slots.py).

    `make mutate` starts test runs side by side (one per mutant), each forked from a
    process that has imported the tests; each run takes its own slot here, at its
    start, so no two runs ever share a test database or a Redis database.
    """
    slots = int(os.environ.get("TEST_DATABASE_SLOTS", "0"))
    if not slots or config.option.collectonly:
        return
    try:
        test_slots.take(_base_test_database_name(), slots)
    except RuntimeError as error:
        raise pytest.UsageError(str(error)) from error


def _base_test_database_name() -> str:
    from django.conf import settings

    database = settings.DATABASES["default"]
    # A run forked from one that took a slot may inherit its name: start from the base.
    return re.sub(
        r"_slot\d+$", "", database.get("TEST", {}).get("NAME") or f"test_{database['NAME']}"
    )


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """The test database of this run's slot, kept between runs (`--reuse-db`), so none
    pays for creating one."""
    if not int(os.environ.get("TEST_DATABASE_SLOTS", "0")):
        return
    from django.conf import settings

    test = settings.DATABASES["default"].setdefault("TEST", {})
    test["NAME"] = f"{_base_test_database_name()}_slot{test_slots.current()}"
