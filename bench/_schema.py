"""A benchmark's own database, its schema built from the models as the test suite builds
it (--nomigrations), dropped at the end. Import after `django.setup()`; the script sets
TEST_DATABASE_NAME first, so that two benchmarks never share a database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.test.utils import setup_databases, setup_test_environment, teardown_databases


class _NoMigrations(dict):
    def __contains__(self, item: object) -> bool:
        return True

    def __getitem__(self, item: str) -> None:
        return None


@contextmanager
def schema_from_models() -> Iterator[None]:
    settings.MIGRATION_MODULES = _NoMigrations()
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        teardown_databases(old_config, verbosity=0)
