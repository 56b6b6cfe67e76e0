"""The test run's environment, then the one settings module.

This sets environment defaults only; every setting still comes from
`config/settings.py`. Tests run against PostgreSQL, as production does: override
DATABASE_URL to point elsewhere, and TEST_DATABASE_NAME to let parallel runs use
separate test databases.
"""

import os

# No .env file: only this environment (the processes the tests start inherit it).
os.environ["ENV_FILE"] = ""
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/broadside")
os.environ.setdefault("SITE_URL", "http://testserver")
# Production turns it on; the admin tests sign editors in without an authenticator, and
# tests/subscriptions/test_staff_sign_in.py checks it on.
os.environ.setdefault("STAFF_MFA_REQUIRED", "false")
os.environ.setdefault("VAR_DIR", os.path.join(os.path.dirname(__file__), "..", "var", "test"))
for _name in (
    "EMAIL_URL",
    "EMAIL_BACKEND",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "STRIPE_API_BASE",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "TELEGRAM_CHAT_ID",
):
    os.environ.pop(_name, None)

from config.settings import *  # noqa: E402, F403
