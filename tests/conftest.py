"""Fixtures shared by every test."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from config.celery import app as celery_app


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
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    cache.clear()


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
