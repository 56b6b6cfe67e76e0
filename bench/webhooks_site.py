"""Settings for bench/webhooks.py: the production settings with every table made from the
models (no migrations needed) and the bench's URLconf (bench/webhooks_urls.py)."""

from config.settings import *  # noqa: F403


class _NoMigrations(dict):
    def __contains__(self, item: object) -> bool:
        return True

    def __getitem__(self, item: str) -> None:
        return None


MIGRATION_MODULES = _NoMigrations()
ROOT_URLCONF = "bench.webhooks_urls"
