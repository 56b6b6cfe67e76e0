"""Addresses in their one normal form, and a plain unique index on the subscriber's.

Rewrites every stored address (subscribers, allauth addresses, users, donations) to
`normalize_email`'s form. Two rows that would end up with the same address are never
merged: both are left exactly as they were and listed in the migration's output (and
the log), for a person to resolve in the admin. Rows whose address the rule refuses
are left as they are and listed too.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.conf import settings
from django.db import migrations, models

logger = logging.getLogger("subscriptions.migrations")


def _report(lines: list[str]) -> None:
    for line in lines:
        logger.warning(line)
        print(f"\n  {line}", end="")


def _normalise_table(model, field: str, label: str, *, scope: str | None = None) -> list[str]:
    """Normalise `field` of every row; rows that would collide (within `scope`) stay."""
    from subscriptions.services.addresses import normalized_or_none

    rows = list(model.objects.exclude(**{field: ""}).values_list("pk", field, *filter(None, [scope])))
    targets: dict[tuple, list[int]] = defaultdict(list)
    new_value: dict[int, str] = {}
    problems: list[str] = []
    for pk, value, *rest in rows:
        normalized = normalized_or_none(value)
        if normalized is None:
            problems.append(f"{label} {pk}: {value!r} is not an address the rule accepts; left as is")
            continue
        targets[(normalized, *rest)].append(pk)
        new_value[pk] = normalized
    for (normalized, *_), pks in targets.items():
        if len(pks) > 1:
            problems.append(
                f"{label} {', '.join(map(str, sorted(pks)))} all normalise to {normalized!r}; "
                "none was changed: merge or correct them by hand"
            )
            continue
        pk = pks[0]
        model.objects.filter(pk=pk).exclude(**{field: new_value[pk]}).update(
            **{field: new_value[pk]}
        )
    return problems


def normalise_addresses(apps, schema_editor) -> None:
    problems = _normalise_table(apps.get_model("subscriptions", "Subscriber"), "email", "Subscriber")
    problems += _normalise_table(apps.get_model("account", "EmailAddress"), "email", "EmailAddress")
    problems += _normalise_table(
        apps.get_model("subscriptions", "Donation"), "email", "Donation", scope="pk"
    )
    User = apps.get_model(settings.AUTH_USER_MODEL)
    problems += _normalise_table(User, "email", "User", scope="pk")
    if problems:
        _report(["Addresses that need a person's decision:", *problems])


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0001_initial"),
        ("account", "0009_emailaddress_unique_primary_email"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(normalise_addresses, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="subscriber", name="subscriber_email_ci_unique"),
        migrations.AddConstraint(
            model_name="subscriber",
            constraint=models.UniqueConstraint(fields=("email",), name="subscriber_email_unique"),
        ),
    ]
