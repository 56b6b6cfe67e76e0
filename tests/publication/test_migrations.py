"""The Publication model's move from `newsletter` to `publication` keeps its table (name
and row, so the code from before the move still reads it between `migrate` and its
restart), its content type and the admin permissions given on it, on both databases
(each in a process of its own: the suite runs without migrations)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests import processes
from tests.browser.harness import create_database, database_url, drop_database

SCRIPT = textwrap.dedent(
    """
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    BEFORE = [("newsletter", "0005_merge_body_images_and_founding_badges"),
              ("subscriptions", "0009_offer_without_plan_is_for_individual_plans"),
              ("auth", "0012_alter_user_first_name_max_length"),
              ("contenttypes", "0002_remove_content_type_name")]
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    assert "publication" not in {m._meta.app_label for m in old.get_models()}
    OldPublication = old.get_model("newsletter", "Publication")
    OldPublication.objects.create(
        pk=1, name="The Meridian Letter", sender_email="letters@example.com",
        kofi_url="https://ko-fi.com/meridian", comment_policy="paid",
        show_founding_badges=True,
    )
    ContentType = old.get_model("contenttypes", "ContentType")
    Permission = old.get_model("auth", "Permission")
    Group = old.get_model("auth", "Group")
    User = old.get_model("auth", "User")
    content_type = ContentType.objects.create(app_label="newsletter", model="publication")
    change = Permission.objects.create(
        codename="change_publication", name="Can change publication",
        content_type=content_type,
    )
    editors = Group.objects.create(name="Editors")
    editors.permissions.add(change)
    editor = User.objects.create(username="editor", is_staff=True)
    editor.groups.add(editors)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from publication.models import Publication
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    # The table keeps its name: processes still running the code from before the move
    # read it until they restart, and find their row there.
    assert "newsletter_publication" in tables and "publication_publication" not in tables
    assert Publication._meta.db_table == "newsletter_publication"
    still_running = OldPublication.objects.get(pk=1)
    assert (still_running.name, still_running.comment_policy) == ("The Meridian Letter", "paid")
    migrated = Publication.load()
    assert (migrated.name, migrated.sender_email, migrated.kofi_url) == (
        "The Meridian Letter", "letters@example.com", "https://ko-fi.com/meridian"
    ), migrated.name
    assert (migrated.comment_policy, migrated.show_founding_badges) == ("paid", True)
    assert Publication.objects.count() == 1
    moved = ContentType.objects.get_for_model(Publication)
    assert moved.pk == content_type.pk, (moved.pk, content_type.pk)
    assert not ContentType.objects.filter(app_label="newsletter", model="publication").exists()
    assert get_user_model().objects.get(username="editor").has_perm(
        "publication.change_publication"
    )
    print("MIGRATED-WITH-ROWS-OK")
    """
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "VAR_DIR": str(tmp_path / "var"),
        "ENV_FILE": "",
        **extra,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request, tmp_path: Path):
    if request.param == "sqlite":
        yield _env(tmp_path)
        return
    name = f"{os.environ.get('TEST_DATABASE_NAME', 'test_broadside')}_publication_move"
    create_database(name)
    try:
        yield _env(tmp_path, DATABASE_URL=database_url(name))
    finally:
        drop_database(name)


def test_the_publication_moves_apps_keeping_its_table_row_content_type_and_rights(database_env):
    result = processes.manage("shell", "-c", SCRIPT, env=database_env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MIGRATED-WITH-ROWS-OK" in result.stdout
