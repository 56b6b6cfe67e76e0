"""The production settings with every app's migrations switched off.

Used by `harness.migrate` only while the project's own apps have no migrations yet:
`migrate --run-syncdb` cannot create unmigrated tables that point at migrated ones
(auth_user), so it creates every table from the models, as `pytest --nomigrations` does.
"""

from config.settings import *  # noqa: F403


class _NoMigrations(dict):
    def __contains__(self, item: object) -> bool:
        return True

    def __getitem__(self, item: str) -> None:
        return None


MIGRATION_MODULES = _NoMigrations()
