"""Settings for bench/webhooks.py: the production settings with the bench's URLconf
(bench/webhooks_urls.py) and its bare reference answered where the webhook is."""

from config.settings import *  # noqa: F403
from config.settings import MIDDLEWARE

ROOT_URLCONF = "bench.webhooks_urls"

# Right after StripeWebhookFirstMiddleware: /bench/bare/ costs what gunicorn, Django's
# handler and the two middleware before it cost, and nothing else.
_WEBHOOK = MIDDLEWARE.index("subscriptions.middleware.StripeWebhookFirstMiddleware")
MIDDLEWARE = [
    *MIDDLEWARE[: _WEBHOOK + 1],
    "bench.webhooks_urls.BareMiddleware",
    *MIDDLEWARE[_WEBHOOK + 1 :],
]
