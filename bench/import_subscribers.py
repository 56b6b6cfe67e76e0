"""Importing a large Substack subscriber list: time and memory.

    .venv/bin/python bench/import_subscribers.py [--sizes 10000,100000]

For each size, a child process generates a Substack email-list CSV (`email,
active_subscription, expiry, plan, email_disabled, created_at`; 1 in 20 readers paid,
1 in 50 with email disabled, 1 in 1000 rows broken) and runs the real
`import_substack` on it against PostgreSQL (DATABASE_URL, as the tests do), on a
database of its own (`bench_broadside_imports`, created and dropped by the child).
It prints rows per second, seconds, and the child's peak resident memory: flat memory
means the 100k peak is close to the 10k peak. Then a second run of the same file
(the idempotent re-run). Target: 100k rows in under 60 s. Figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, rows: int) -> None:
    rng = random.Random(rows)
    with path.open("w", encoding="utf-8") as out:
        out.write("email,active_subscription,expiry,plan,email_disabled,created_at\n")
        for n in range(rows):
            if n % 1000 == 999:
                out.write(f"broken-row-{n},false,,,false,2023-01-01\n")
                continue
            paid = n % 20 == 0
            expiry = "2031-01-01T00:00:00.000Z" if paid else ""
            disabled = "true" if n % 50 == 1 else "false"
            day = 1 + rng.randrange(28)
            out.write(
                f"reader{n}@example{n % 97}.com,{str(paid).lower()},{expiry},"
                f"{'yearly' if paid else ''},{disabled},2023-03-{day:02d}T10:00:00.000Z\n"
            )


def child(rows: int) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ["TEST_DATABASE_NAME"] = "bench_broadside_imports"
    import django

    django.setup()
    from _schema import schema_from_models
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    with schema_from_models():
        from subscriptions.models import Membership, Subscriber
        from substack.services import import_substack

        with tempfile.TemporaryDirectory() as folder:
            export = Path(folder)
            generate(export / "email_list.bench.csv", rows)
            size_mb = (export / "email_list.bench.csv").stat().st_size / 1e6
            for label in ["first run", "re-run"]:
                started = time.perf_counter()
                report = import_substack(path=export)
                seconds = time.perf_counter() - started
                peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(
                    f"{rows:>8} rows {label:>9}: {seconds:7.2f} s  {rows / seconds:9.0f} rows/s  "
                    f"peak RSS {peak_mb:6.1f} MB  (CSV {size_mb:.1f} MB; created "
                    f"{report.created}, unchanged {report.unchanged}, rejected "
                    f"{report.rejected})",
                    flush=True,
                )
            print(
                f"{'':>8} in the database: {Subscriber.objects.count()} subscribers, "
                f"{Membership.objects.count()} memberships",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print("Substack subscriber import (import_substack on one email-list CSV)")
    for size in [int(s) for s in args.sizes.split(",")]:
        subprocess.run([sys.executable, __file__, "--child", str(size)], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
