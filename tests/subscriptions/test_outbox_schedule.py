"""Beat polls the Stripe events' outbox only when events can arrive: they come only as
webhooks signed with STRIPE_WEBHOOK_SECRET, so without it there is no poll (it would
log three lines a second in `make run` for nothing). Settings are read at import, so
each case is a process of its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import processes

SCRIPT = (
    "import json; from django.conf import settings; "
    "print(json.dumps(sorted(settings.CELERY_BEAT_SCHEDULE)))"
)


def beat_schedule(tmp_path: Path, **stripe: str) -> list[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "VAR_DIR": str(tmp_path / "var"),
        "ENV_FILE": "",  # a developer's .env could set the Stripe keys
        **stripe,
    }
    result = processes.manage("shell", "-c", SCRIPT, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "stripe",
    [{}, {"STRIPE_SECRET_KEY": "sk_test_0123456789", "STRIPE_WEBHOOK_SECRET": ""}],
    ids=["stripe off", "api key without webhook secret"],
)
def test_without_a_webhook_secret_beat_does_not_poll_the_outbox(tmp_path, stripe):
    schedule = beat_schedule(tmp_path, **stripe)

    assert "drain-stripe-events" not in schedule
    assert "publish-due-articles" in schedule  # the rest of the schedule is still there


def test_with_a_webhook_secret_beat_polls_the_outbox(tmp_path):
    schedule = beat_schedule(
        tmp_path,
        STRIPE_SECRET_KEY="sk_test_0123456789",
        STRIPE_WEBHOOK_SECRET="whsec_0123456789",
    )

    assert "drain-stripe-events" in schedule
