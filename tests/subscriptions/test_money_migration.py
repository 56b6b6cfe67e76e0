"""The trials/offers/gifts/groups migration on a database that already has readers
(the embedded default, SQLite, in a process of its own: the suite runs without
migrations)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from tests import processes

SCRIPT = textwrap.dedent(
    """
    from datetime import timedelta
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    BEFORE = [("subscriptions", "0004_plan_imported_from"),
              ("newsletter", "0003_merge_claim_lease_and_image_bounds")]
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Plan = old.get_model("subscriptions", "Plan")
    Subscriber = old.get_model("subscriptions", "Subscriber")
    Membership = old.get_model("subscriptions", "Membership")
    plan = Plan.objects.create(name="Monthly", interval="month", amount=800,
                               stripe_price_id="price_x")
    kept = Subscriber.objects.create(email="kept@example.com", status="active")
    gifted = Subscriber.objects.create(email="gift@example.com", status="active")
    Membership.objects.create(subscriber=kept, plan=plan, kind="stripe",
                              stripe_subscription_id="sub_x", status="active")
    Membership.objects.create(subscriber=gifted, plan=plan, kind="gift", status="active",
                              expires_at=timezone.now() + timedelta(days=30))

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from subscriptions.models import Membership, Plan, Subscriber
    from subscriptions.services.access import subscriber_is_paid
    migrated = Plan.objects.get()
    assert (migrated.kind, migrated.trial_days) == ("individual", 0), migrated.kind
    rows = {m.subscriber.email: m for m in Membership.objects.select_related("subscriber")}
    assert rows["kept@example.com"].quantity == 1
    assert rows["kept@example.com"].offer_id is None
    assert rows["gift@example.com"].starts_at is None
    assert rows["gift@example.com"].group_id is None
    for email in ("kept@example.com", "gift@example.com"):
        assert subscriber_is_paid(subscriber=Subscriber.objects.get(email=email)), email
    print("MIGRATED-WITH-ROWS-OK")
    """
)


def test_existing_plans_and_memberships_keep_their_meaning(tmp_path: Path) -> None:
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
    assert "MIGRATED-WITH-ROWS-OK" in result.stdout
