"""Settings for bench/webhooks.py: the production settings with the bench's URLconf
(bench/webhooks_urls.py)."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.webhooks_urls"
