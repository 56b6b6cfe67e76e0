"""Broadside settings: one module, read top to bottom.

Every difference between environments comes from an environment variable (see
`.env.example`). With nothing set, the site runs on embedded defaults: SQLite and a
filesystem Celery broker under `var/`, and emails written to `var/mail/`.
"""

from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django_prose_editor.config import html_tags
from js_asset import static_lazy

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
# An optional file of variables; the real environment wins over it. ENV_FILE names
# another file, and an empty ENV_FILE reads none (the tests and the processes they start
# must never pick up a developer's .env: its Telegram token or database).
ENV_FILE = env("ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE:
    environ.Env.read_env(ENV_FILE)

VAR_DIR = Path(env("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# --- Core -------------------------------------------------------------------------

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment (any long random "
            "string), or set DEBUG=true for local development."
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-broadside"

SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[SITE_URL])

INSTALLED_APPS = [
    # Django's admin, on the editors' site (newsletter/admin_site.py).
    "newsletter.apps.EditorsAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.sitemaps",
    "django.contrib.humanize",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "anymail",
    "csp",
    "django_prose_editor",
    # Our apps, bottom layer first (README, "Code tour"): each imports only the ones
    # listed before it (pyproject.toml [tool.importlinter]).
    "publication",
    "subscriptions",
    "newsletter",
    "substack",
]

MIDDLEWARE = [
    # The open pixel and click redirect of emails: answered before the whole stack
    # (newsletter/middleware.py, TrackingMiddleware).
    "newsletter.middleware.TrackingMiddleware",
    # Stripe's deliveries, answered before anything else runs (subscriptions/middleware.py).
    "subscriptions.middleware.StripeWebhookFirstMiddleware",
    # ETag/Last-Modified checks (304) for every page, cached or not; then cached
    # anonymous pages, answered before anything below runs (newsletter/middleware.py).
    "django.middleware.http.ConditionalGetMiddleware",
    "newsletter.middleware.PageCacheMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django's AuthenticationMiddleware, with the signed-in reader's account and paid
    # status read from the cache (subscriptions/services/reader_cache.py).
    "subscriptions.middleware.ReaderAuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "config.csp.SiteCSPMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "newsletter.context_processors.publication",
            ],
        },
    },
]

# --- Data ---------------------------------------------------------------------------

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'broadside.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# A kept connection that the database dropped (restart, failover) is replaced before
# use, instead of failing the next request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default has several processes (web, worker, beat) and threads (a
    # worker's sent-marks) writing at once. WAL lets readers go on while one writes;
    # writers queue for up to `timeout` seconds instead of failing with "database is
    # locked"; and IMMEDIATE takes the write lock when a transaction begins, so two
    # workers claiming deliveries run one after the other (SQLite has no SKIP LOCKED).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        }
    )
if env("TEST_DATABASE_NAME", default=""):
    # Lets several test runs share one PostgreSQL server without clashing.
    DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's Redis backend, sharing one client per pool (config/cache.py).
            "BACKEND": "config.cache.SharedClientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="broadside"),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Auth and readers' accounts (django-allauth) -----------------------------------

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/account/"
ACCOUNT_ADAPTER = "subscriptions.adapters.ReaderAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_USER_MODEL_USERNAME_FIELD = "username"
ACCOUNT_LOGIN_BY_CODE_ENABLED = True
ACCOUNT_LOGIN_BY_CODE_REQUIRED = False
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = True
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_FORMS = {
    "login": "subscriptions.adapters.ReaderLoginForm",
    "request_login_code": "subscriptions.adapters.ReaderRequestLoginCodeForm",
    "signup": "subscriptions.adapters.ReaderSignupForm",
}
# Two-factor authentication for staff (newsletter/admin_site.py): an authenticator app
# (TOTP) and recovery codes, set up at /accounts/2fa/. STAFF_MFA_REQUIRED sends staff
# without one there before any admin page; on unless DEBUG.
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env("MFA_TOTP_ISSUER", default="Broadside")
STAFF_MFA_REQUIRED = env.bool("STAFF_MFA_REQUIRED", default=not DEBUG)
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "confirm_email": "1/3m/key",
    "request_login_code": "20/m/ip,3/m/key",
}

# --- Internationalisation ----------------------------------------------------------

LANGUAGE_CODE = "en-us"
# The publication's time zone (an IANA name, e.g. "Europe/London"): the admin's date
# fields are entered in it (shown next to "Publish at") and every date on the site and
# in email is shown in it. Stored times stay UTC.
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# "1 December 2026" wherever Django formats a date by default (config/formats/en/).
FORMAT_MODULE_PATH = ["config.formats"]

# --- Static and media --------------------------------------------------------------

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Uploads (covers, logos, avatars, pictures in bodies) go through Django's storage API
# only, so any storage backend works by configuration: the local disk by default, or an
# S3-compatible bucket with MEDIA_STORAGE=storages.backends.s3.S3Storage (install
# django-storages[s3]) and the MEDIA_S3_* variables (README "Pictures in articles").
MEDIA_STORAGE = env("MEDIA_STORAGE", default="django.core.files.storage.FileSystemStorage")
_MEDIA_OPTIONS: dict[str, object] = {}
if env("MEDIA_S3_BUCKET", default=""):
    _MEDIA_OPTIONS = {
        "bucket_name": env("MEDIA_S3_BUCKET"),
        "endpoint_url": env("MEDIA_S3_ENDPOINT_URL", default="") or None,
        "region_name": env("MEDIA_S3_REGION", default="") or None,
        "access_key": env("MEDIA_S3_ACCESS_KEY_ID", default="") or None,
        "secret_key": env("MEDIA_S3_SECRET_ACCESS_KEY", default="") or None,
        # The public address readers' browsers and mail clients load images from.
        "custom_domain": env("MEDIA_S3_CUSTOM_DOMAIN", default="") or None,
        "querystring_auth": False,  # plain URLs: a signed one expires inside old emails
        "file_overwrite": False,
    }
STORAGES = {
    "default": {"BACKEND": MEDIA_STORAGE, "OPTIONS": _MEDIA_OPTIONS},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
SERVE_MEDIA = env.bool("SERVE_MEDIA", default=True)
# The Substack import copies pictures from public hosts only; true also allows private
# and loopback ones (tests, a local stand-in). Never true in production: the import
# would fetch whatever internal address a post names.
IMPORT_MEDIA_ALLOW_PRIVATE = env.bool("IMPORT_MEDIA_ALLOW_PRIVATE", default=False)

# The article editor's paywall button (newsletter/static/newsletter/prose/paywall.js):
# inserts the marker <hr class="paywall"> that ends the free part of an article.
# Footnote ids and video players (imported.js) survive opening and saving an imported
# article.
DJANGO_PROSE_EDITOR_EXTENSIONS = [
    {
        "js": [static_lazy("newsletter/prose/paywall.js")],
        "extensions": {"Paywall": html_tags(["hr"], {"hr": ["class"]})},
    },
    {
        "js": [static_lazy("newsletter/prose/imported.js")],
        "extensions": {
            "FootnoteIds": html_tags([], {"p": ["id"], "li": ["id"], "a": ["id"]}),
            "VideoEmbed": html_tags(["iframe"], {"iframe": ["src", "allowfullscreen"]}),
        },
    },
    # Pictures uploaded into the body (button, drop, paste) and numbered footnotes.
    {
        "js": [static_lazy("newsletter/prose/images.js")],
        "extensions": {"BodyImageUpload": html_tags([], {})},
    },
    {
        "js": [static_lazy("newsletter/prose/footnotes.js")],
        "extensions": {"Footnote": html_tags(["sup"], {"sup": ["data-note"]})},
    },
]

# --- Email --------------------------------------------------------------------------

DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Broadside <newsletter@localhost>")
SERVER_EMAIL = env("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
EMAIL_URL = env("EMAIL_URL", default="")
ANYMAIL = {}
if env("EMAIL_BACKEND", default=""):
    # An ESP through django-anymail, e.g. anymail.backends.postmark.EmailBackend,
    # with its keys in ANYMAIL_* variables (see README).
    EMAIL_BACKEND = env("EMAIL_BACKEND")
    ANYMAIL = {
        key.removeprefix("ANYMAIL_"): value
        for key, value in env.ENVIRON.items()
        if key.startswith("ANYMAIL_")
    }
elif EMAIL_URL:
    vars().update(env.email_url("EMAIL_URL"))
    # Django's SMTP backend plus 8BITMIME/SMTPUTF8 and DKIM (config/mail.py).
    EMAIL_BACKEND = "config.mail.EmailBackend"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
# Newsletter sends: deliveries per claimed chunk, chunks of one send in flight at once
# (raise with the number of worker processes), how long a claim lives after its worker
# last renewed it (every fifth of that while it sends) before the sweeper hands it to
# another worker, and how often the sweeper runs.
EMAIL_SEND_CHUNK_SIZE = env.int("EMAIL_SEND_CHUNK_SIZE", default=1000)
EMAIL_SEND_PARALLELISM = env.int("EMAIL_SEND_PARALLELISM", default=4)
# Connections to the mail server (or provider) each worker process sends a chunk over
# at once, pipelined (RFC 2920) where the server offers it.
EMAIL_SEND_CONNECTIONS = env.int("EMAIL_SEND_CONNECTIONS", default=32)
# Sent-marks are committed in batches of up to EMAIL_SEND_MARK_BATCH, or once the
# oldest has waited EMAIL_SEND_MARK_INTERVAL seconds; a worker process never has more
# than EMAIL_SEND_MARK_BATCH messages handed over without a committed mark (the most a
# crash can send twice).
EMAIL_SEND_MARK_BATCH = env.int("EMAIL_SEND_MARK_BATCH", default=128)
EMAIL_SEND_MARK_INTERVAL = env.float("EMAIL_SEND_MARK_INTERVAL", default=0.005)
# With an anymail ESP that has a batch API (Mailgun, Postmark): many readers per call.
EMAIL_SEND_ESP_BATCH = env.bool("EMAIL_SEND_ESP_BATCH", default=True)
EMAIL_CLAIM_TIMEOUT = env.float("EMAIL_CLAIM_TIMEOUT", default=20.0)
EMAIL_SWEEP_INTERVAL = env.float("EMAIL_SWEEP_INTERVAL", default=5.0)
EMAIL_UNSUBSCRIBE_MAILTO = env("EMAIL_UNSUBSCRIBE_MAILTO", default="")
# DKIM signing of every email sent over SMTP (config/mail.py); `manage.py dkim_key`
# makes a key and prints the DNS record. Off while EMAIL_DKIM_DOMAIN is empty.
EMAIL_DKIM_DOMAIN = env("EMAIL_DKIM_DOMAIN", default="")
EMAIL_DKIM_SELECTOR = env("EMAIL_DKIM_SELECTOR", default="broadside")
EMAIL_DKIM_PRIVATE_KEY = env("EMAIL_DKIM_PRIVATE_KEY", default="")
EMAIL_DKIM_PRIVATE_KEY_FILE = env("EMAIL_DKIM_PRIVATE_KEY_FILE", default="")

# --- Celery -------------------------------------------------------------------------

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    _queue_dir.mkdir(parents=True, exist_ok=True)
    (VAR_DIR / "celery" / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "store_processed": False,
        # Where the transport keeps its exchange bindings (by default ./control).
        "control_folder": str(VAR_DIR / "celery" / "control"),
    }
else:
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # kombu's Redis transport with a guard that keeps busy workers alive through a
        # Redis restart (see config/broker.py).
        CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    # Redis redelivers unacknowledged tasks after this long; keep it above the longest
    # task so an acks_late task is not run twice while still running.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
    }
    if env("CELERY_BROKER_KEY_PREFIX", default=""):
        # Keeps the queues of several sites (or test runs) sharing one Redis apart.
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env("CELERY_BROKER_KEY_PREFIX")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
STRIPE_OUTBOX_POLL_SECONDS = env.float("STRIPE_OUTBOX_POLL_SECONDS", default=1.0)
# Opens and clicks (newsletter/services/tracking.py). Raw events older than this are
# rolled into daily counts and deleted (13 months by default).
TRACKING_RETENTION_DAYS = env.int("TRACKING_RETENTION_DAYS", default=396)
# A pixel fetched sooner than this after the mail server took the message is a prefetch.
TRACKING_PREFETCH_SECONDS = env.float("TRACKING_PREFETCH_SECONDS", default=10.0)
# A downloaded copy of Apple's relay egress list (https://mask-api.icloud.com/egress-ip-ranges.csv).
TRACKING_APPLE_PROXY_NETWORKS_FILE = env("TRACKING_APPLE_PROXY_NETWORKS_FILE", default="")
# With Redis, hits wait in a list and are written in batches this often.
TRACKING_FLUSH_INTERVAL = env.float("TRACKING_FLUSH_INTERVAL", default=5.0)
# Each web process pushes its hits onto Redis in one command this often (seconds).
TRACKING_PUSH_INTERVAL = env.float("TRACKING_PUSH_INTERVAL", default=0.05)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "publish-due-articles": {
        "task": "newsletter.tasks.publish_due_articles",
        "schedule": 60.0,
    },
    "expire-memberships": {
        "task": "subscriptions.tasks.expire_memberships",
        "schedule": crontab(minute=15),
    },
    "deliver-gifts": {
        "task": "subscriptions.tasks.deliver_gifts",
        "schedule": crontab(minute="*/10"),
    },
    "send-comment-digests": {
        "task": "newsletter.tasks.send_comment_digests",
        "schedule": crontab(minute=5),
    },
    "sweep-email-sends": {
        "task": "newsletter.tasks.sweep_email_sends",
        "schedule": EMAIL_SWEEP_INTERVAL,
    },
    "flush-tracking-hits": {
        "task": "newsletter.tasks.flush_tracking_hits",
        "schedule": TRACKING_FLUSH_INTERVAL,
        "options": {"expires": TRACKING_FLUSH_INTERVAL * 2},
    },
    "roll-up-engagement": {
        "task": "newsletter.tasks.roll_up_engagement",
        "schedule": 300.0,
    },
    "expire-engagement-events": {
        "task": "newsletter.tasks.expire_engagement_events",
        "schedule": crontab(hour=3, minute=40),
    },
    "requeue-stalled-telegram-posts": {
        "task": "newsletter.tasks.requeue_stalled_telegram_posts",
        "schedule": 300.0,
    },
}

# --- Integrations -------------------------------------------------------------------

STRIPE_SECRET_KEY = env("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env("STRIPE_API_BASE", default="")

# The Stripe events' outbox: accepted events are applied within about this long. Only
# with a webhook secret: events arrive only as signed webhooks, refused without one, so
# without it the poll (three log lines a second in `make run`) would only find nothing.
if STRIPE_WEBHOOK_SECRET:
    CELERY_BEAT_SCHEDULE["drain-stripe-events"] = {
        "task": "subscriptions.tasks.drain_stripe_events",
        "schedule": STRIPE_OUTBOX_POLL_SECONDS,
        # A poll that waited longer than the next one is of no use.
        "options": {"expires": STRIPE_OUTBOX_POLL_SECONDS * 2},
    }

TELEGRAM_BOT_TOKEN = env("TELEGRAM_BOT_TOKEN", default="")
TELEGRAM_CHAT_ID = env("TELEGRAM_CHAT_ID", default="")
TELEGRAM_API_URL = env("TELEGRAM_API_URL", default="https://api.telegram.org")
TELEGRAM_TIMEOUT = env.float("TELEGRAM_TIMEOUT", default=15.0)  # seconds per Bot API call

# --- Security -----------------------------------------------------------------------

# X-Forwarded-Proto says whether the visitor's connection was https. Any client can send
# it, so it is believed only with BEHIND_PROXY=true: gunicorn listens on 127.0.0.1
# (Procfile) behind a proxy that terminates TLS and overwrites the header. The same
# setting makes rate limits count the address the proxy appended to X-Forwarded-For
# (subscriptions/services/ratelimit.py:client_ip), since REMOTE_ADDR is the proxy.
BEHIND_PROXY = env.bool("BEHIND_PROXY", default=False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
_https = SITE_URL.startswith("https://")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_https and not DEBUG)
# Load balancers probe /healthz over plain http inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = _https
# Sessions read from the cache (written through to the database): a signed-in page does
# not wait for a session query.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
CSRF_COOKIE_SECURE = _https
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if _https else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_https)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp, config/csp.py). Forms may lead to Stripe's
# Checkout and Customer Portal, or to the stand-in STRIPE_API_BASE names.
_FORM_TARGETS = ["https://checkout.stripe.com", "https://billing.stripe.com"]
if STRIPE_API_BASE:
    _FORM_TARGETS.append(STRIPE_API_BASE.rstrip("/"))
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        # Covers and images in imported posts may live on other hosts (Substack's CDN,
        # object storage for MEDIA_URL).
        "img-src": ["'self'", "https:", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        # Video players in articles, and only these two (newsletter/services/content.py).
        "frame-src": ["https://www.youtube-nocookie.com", "https://player.vimeo.com"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'", *_FORM_TARGETS],
    }
}
X_FRAME_OPTIONS = "DENY"
# Joining the browsers' HSTS preload list is hard to undo, so it is opt-in
# (SECURE_HSTS_PRELOAD=true); until then check --deploy's reminder about it is silenced.
SILENCED_SYSTEM_CHECKS = env.list(
    "SILENCED_SYSTEM_CHECKS", default=[] if SECURE_HSTS_PRELOAD else ["security.W021"]
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # httpx logs every request URL at INFO, and Bot API URLs carry the bot token.
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # The stripe library logs two lines per API request at INFO.
        "stripe": {"level": "WARNING"},
    },
}
