"""The conversions migration on a database that already has donations (the embedded
default, SQLite, in a process of its own: the suite runs without migrations): paid
donations get a payment day, pending ones none, and nothing is credited to an article."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from tests import processes

SCRIPT = textwrap.dedent(
    """
    from datetime import datetime, UTC
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    BEFORE = [("subscriptions", "0009_offer_without_plan_is_for_individual_plans")]
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Donation = old.get_model("subscriptions", "Donation")
    made = datetime(2025, 6, 1, 12, tzinfo=UTC)
    for status in ("paid", "refunded", "pending"):
        donation = Donation.objects.create(amount=1000, status=status)
        Donation.objects.filter(pk=donation.pk).update(created_at=made)

    executor = MigrationExecutor(connection)
    executor.migrate([("subscriptions", "0010_conversions_source_article_and_donation_paid_at")])

    from subscriptions.models import Donation
    paid_at = {d.status: d.paid_at for d in Donation.objects.all()}
    assert paid_at == {"paid": made, "refunded": made, "pending": None}, paid_at
    assert not Donation.objects.filter(source_article_id__isnull=False).exists()
    print("CONVERSIONS-MIGRATED-OK")
    """
)


def test_paid_donations_get_their_day_and_pending_ones_none(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "VAR_DIR": str(tmp_path / "var"),
        "ENV_FILE": "",
    }
    result = processes.manage("shell", "-c", SCRIPT, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONVERSIONS-MIGRATED-OK" in result.stdout
