"""Session fixtures for the browser journeys: the running product and a real Chromium.

One stack per test session (gunicorn, a celery worker, the capturing SMTP server and
the Stripe and Telegram stand-ins), serving pytest's test database; each journey runs
with `transactional_db`, so what it creates is committed and visible to the server and
the worker, and is truncated afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection
from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser import harness
from tests.fakes.stripe_api import FakeStripeAPI
from tests.fakes.telegram_api import FakeTelegramAPI

ARTIFACTS = harness.ROOT / "test-artifacts"


@dataclass
class Site:
    """What a journey needs from the running product."""

    url: str
    mail: harness.CapturedMail
    stripe: FakeStripeAPI
    telegram: FakeTelegramAPI
    stack: harness.Stack

    def link(self, path: str) -> str:
        return f"{self.url}{path}"


@pytest.fixture(scope="package")
def e2e_stack(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Site]:
    with django_db_blocker.unblock():
        database_name = connection.settings_dict["NAME"]
        connection.close()
    workdir = tmp_path_factory.mktemp("e2e")
    harness.forget_stack_keys()
    with (
        harness.capturing_smtp_server() as (smtp_port, mail),
        FakeStripeAPI(webhook_secret=harness.STRIPE_WEBHOOK_SECRET) as stripe_api,
        FakeTelegramAPI(
            token=harness.TELEGRAM_BOT_TOKEN, chats=[harness.TELEGRAM_CHAT_ID]
        ) as telegram_api,
        harness.running_stack(
            database_name=database_name,
            workdir=workdir,
            smtp_port=smtp_port,
            stripe_api_base=stripe_api.url,
            telegram_api_url=telegram_api.url,
        ) as stack,
    ):
        # Stripe's checkout page delivers its signed webhooks to the site, as Stripe does.
        stripe_api.webhook_url = f"{stack.site_url}/stripe/webhook/"
        yield Site(
            url=stack.site_url, mail=mail, stripe=stripe_api, telegram=telegram_api, stack=stack
        )
    harness.forget_stack_keys()


@pytest.fixture
def site(e2e_stack: Site, transactional_db) -> Iterator[Site]:
    e2e_stack.stack.check_alive()
    e2e_stack.mail.clear()
    e2e_stack.telegram.reset()
    harness.clear_cache_keys()
    yield e2e_stack
    e2e_stack.stack.check_alive()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Chromium for this package's tests only.

    Playwright's sync API keeps an asyncio loop running on the main thread while it is
    open, which Django's ORM takes for async code; the journeys use the ORM only
    between browser steps, never concurrently, so the check is lifted here, and both
    end before the rest of the suite runs.
    """
    executable = harness.chromium_path()
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(
            executable_path=executable, args=harness.CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, request) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    # Chromium reports every resource or inline script the Content-Security-Policy
    # blocked on the console: the journey must not meet one.
    violations: list[str] = []
    context.on(
        "console",
        lambda message: (
            violations.append(f"{message.location.get('url')}: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        save_screenshot(page, f"{request.node.name}-failed")
    context.close()
    assert violations == [], "\n".join(violations)


def save_screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def pytest_collection_modifyitems(config, items) -> None:
    """Journeys flush every table between tests except the content types.

    The server's processes cache content type ids for the life of the process (the
    admin's log entries point at them); recreating the table would give them new ids
    and break the next editor journey.
    """
    from django.apps import apps as registry

    # By app name: an INSTALLED_APPS entry may name an AppConfig (the admin's does).
    apps = [
        config.name
        for config in registry.get_app_configs()
        if config.name != "django.contrib.contenttypes"
    ]
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents and "site" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.django_db(transaction=True, available_apps=apps))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
        if report.failed and "site" in getattr(item, "funcargs", {}):
            report.sections.append(("stack logs", item.funcargs["site"].stack.logs()))
    return report
