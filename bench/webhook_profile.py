"""The webhook's own CPU per delivery, in-process: signed deliveries through Django's WSGI
handler (the production settings and middleware, on PostgreSQL), no HTTP server and no
client on the same cores.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/broadside \\
        .venv/bin/python bench/webhook_profile.py [--rounds 8] [--requests 500] [--profile]

Each round times `--requests` GETs of the trivial view (`/bench/ping/`, through the whole
middleware stack) and as many signed deliveries, as the CPU time of the request thread
(which on a virtual machine includes what it costs to sleep and wake around each
database wait); the minimum and median over rounds are printed. Each request starts as
gunicorn's would: the kept connection is due its health check. `--profile` then prints
cProfile's view of a round of deliveries (its own overhead makes the times larger; the
proportions are what it is for). The schema is built from the models in a database of
its own (TEST_DATABASE_NAME, default bench_webhook_profile), dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEBHOOK_SECRET = "whsec_bench_0123456789abcdef"

for _name in list(os.environ):
    if _name.startswith(("CELERY_", "REDIS_", "EMAIL_", "STRIPE_")):
        del os.environ[_name]
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "bench.webhooks_site",
        "ENV_FILE": "",
        "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SITE_URL": "http://127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_SECRET_KEY": "sk_test_bench_not_used",
    }
)
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/broadside")
os.environ.setdefault("TEST_DATABASE_NAME", "bench_webhook_profile")
os.environ.setdefault("VAR_DIR", "/tmp/bench-webhook-profile")

import django  # noqa: E402

django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.db import connection  # noqa: E402

from bench import webhooks  # noqa: E402
from bench._schema import schema_from_models  # noqa: E402

Request = tuple[str, bytes | None, dict[str, str]]


def environ(method: str, path: str, body: bytes | None, headers: dict[str, str]) -> dict:
    body = body or b""
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        env[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    webhooks.WEBHOOK_SECRET = WEBHOOK_SECRET
    with schema_from_models():
        app = WSGIHandler()

        def call(request: Request) -> None:
            method, body, headers = request
            path = "/stripe/webhook/" if method == "POST" else "/bench/ping/"
            # As each request starts under gunicorn (request_started): a kept
            # connection is due its health check.
            connection.close_if_unusable_or_obsolete()
            statuses: list[str] = []
            response = app(
                environ(method, path, body, headers), lambda s, h, e=None: statuses.append(s)
            )
            b"".join(response)
            response.close()
            if not statuses[0].startswith("200"):
                raise RuntimeError(f"{path}: {statuses[0]}")

        def cpu_per_request(requests: list[Request]) -> float:
            started = time.thread_time()
            for request in requests:
                call(request)
            return (time.thread_time() - started) / len(requests) * 1e6

        for _ in range(100):  # warm up both paths
            call(webhooks.webhook_request())
            call(webhooks.ping_request())
        trivial, webhook = [], []
        for _ in range(args.rounds):
            trivial.append(cpu_per_request([webhooks.ping_request()] * args.requests))
            webhook.append(
                cpu_per_request([webhooks.webhook_request() for _ in range(args.requests)])
            )
        print(
            f"CPU per request, {args.rounds} rounds x {args.requests}: "
            f"trivial view min {min(trivial):.0f} us, median {statistics.median(trivial):.0f} us | "
            f"webhook min {min(webhook):.0f} us, median {statistics.median(webhook):.0f} us"
        )
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.profile:
            deliveries = [webhooks.webhook_request() for _ in range(args.requests)]
            profile = cProfile.Profile(time.thread_time)
            profile.enable()
            for request in deliveries:
                call(request)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
