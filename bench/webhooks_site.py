"""Settings for bench/webhooks.py: the production settings with every table made from the
models (no migrations needed, as for the browser tests' stack) and the bench's URLconf
(bench/webhooks_urls.py)."""

from tests.browser.syncdb_settings import *  # noqa: F403

ROOT_URLCONF = "bench.webhooks_urls"
