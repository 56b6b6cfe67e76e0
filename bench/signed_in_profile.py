"""A signed-in paid reader's repeat article page, in-process: its CPU per request, its
cache round trips, and cProfile's view, through Django's WSGI handler on the production
settings (PostgreSQL and Redis), no HTTP server and no client on the same cores.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/broadside \\
    REDIS_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python bench/signed_in_profile.py [--rounds 8] [--requests 300] [--profile]

The content is bench/load.py's (a paid article with a discussion of 30 comments and 10
replies); the reader sends their session and the CSRF cookie the page set, as a browser
does. Each round times `--requests` GETs of the static file (WhiteNoise, the same
handler) and as many of the page, as the CPU time of the request thread; the minimum
and median over rounds are printed, with the page's Redis commands per request
(a pipeline counted once). The schema is built from the models in a database of its
own (TEST_DATABASE_NAME, default bench_signed_in_profile), dropped at the end; the Redis
database named is flushed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import statistics
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

for _name in list(os.environ):
    if _name.startswith(("CELERY_", "EMAIL_", "STRIPE_")):
        del os.environ[_name]
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "",
        "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SITE_URL": "http://127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
)
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/broadside")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")
os.environ.setdefault("TEST_DATABASE_NAME", "bench_signed_in_profile")
os.environ.setdefault("VAR_DIR", "/tmp/bench-signed-in-profile")
os.environ.setdefault("STATIC_ROOT", f"{os.environ['VAR_DIR']}/static")

import django  # noqa: E402

django.setup()

from django.core.cache import cache  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench._schema import schema_from_models  # noqa: E402
from bench.load import seed_content  # noqa: E402
from tests.cache_trips import counted_redis_trips  # noqa: E402


def environ(path: str, cookie: str) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "HTTP_COOKIE": cookie,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cache.clear()
    call_command("collectstatic", interactive=False, verbosity=0)
    with schema_from_models():
        paths = seed_content()
        app = WSGIHandler()

        def call(path: str, cookie: str = "") -> tuple[str, list, bytes]:
            connection.close_if_unusable_or_obsolete()  # as under gunicorn
            answer: list = []
            response = app(environ(path, cookie), lambda s, h, e=None: answer.extend((s, h)))
            body = b"".join(response)
            response.close()
            if not answer[0].startswith("200"):
                raise RuntimeError(f"{path}: {answer[0]}")
            return answer[0], answer[1], body

        cookie = f"sessionid={paths['paid_session']}"
        _, headers, body = call(paths["paid_path"], cookie)
        jar = SimpleCookie()
        for name, value in headers:
            if name.lower() == "set-cookie":
                jar.load(value)
        if "csrftoken" in jar:
            cookie += f"; csrftoken={jar['csrftoken'].value}"
        hashed = re.search(rb'href="(/static/css/site\.[0-9a-f]+\.css)"', body)
        static = hashed.group(1).decode() if hashed else "/static/css/site.css"

        def cpu_per_request(path: str, cookie: str = "") -> float:
            started = time.thread_time()
            for _ in range(args.requests):
                call(path, cookie)
            return (time.thread_time() - started) / args.requests * 1e6

        for _ in range(50):
            call(paths["paid_path"], cookie)
            call(static)
        with counted_redis_trips() as trips:
            call(paths["paid_path"], cookie)
        print(f"cache round trips of a repeat page: {len(trips)} ({' '.join(trips)})")
        reference, page = [], []
        for _ in range(args.rounds):
            reference.append(cpu_per_request(static))
            page.append(cpu_per_request(paths["paid_path"], cookie))
        print(
            f"CPU per request, {args.rounds} rounds x {args.requests}: "
            f"static file min {min(reference):.0f} us, median {statistics.median(reference):.0f}"
            f" us | signed-in page min {min(page):.0f} us, median {statistics.median(page):.0f} us"
        )
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.profile:
            profile = cProfile.Profile(time.thread_time)
            profile.enable()
            for _ in range(args.requests):
                call(paths["paid_path"], cookie)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(90)
    cache.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
