"""Signed Stripe events accepted per second by /stripe/webhook/ under gunicorn.

    .venv/bin/python bench/webhooks.py [--events 2000] [--concurrency 8] [--workers 2]
                                       [--threads 4] [--rounds 3] [--burst 10000]

Starts gunicorn (on 127.0.0.1, a port the kernel picks) with the production settings on
a PostgreSQL database of its own (`bench_broadside_webhooks`, created from the models
and dropped at the end), so each accepted event takes the real path: verify the
signature with the stripe library, insert the StripeEvent, answer (no broker call: the
table is the workers' outbox).

`--burst N` then sends N signed deliveries (20% of them redeliveries of others) about
N/20 Stripe objects while the broker (a redis-server of the bench's own) is stopped,
starts the broker and a `celery worker -B` after, and prints how long the workers took
to apply them, checking each event was applied once and in order per object.

Every delivery is a distinct, freshly signed `customer.subscription.updated` event of
realistic size, signed before the round starts. The baseline is a trivial view
(`/bench/ping/`, in the bench's own URLconf) served by the same gunicorn in the same
run, through the site's whole middleware stack, as any cheap page is: the figure the
target (>= 0.6) is about. A second reference, `/bench/bare/`, is answered by a bench
middleware at the webhook's own place (right after StripeWebhookFirstMiddleware), so
it costs only gunicorn and Django's handler: the ratio to it is printed too, as the
stricter one. Rounds alternate the references and the webhook; each round's ratios are
printed, then the medians (robust to a machine that other work slows down now and then).

The client is this script: threads opening one HTTP/1.1 connection per request (as
Stripe's deliveries come) on the same machine, so it takes CPU from the server; the
CPU seconds per request of gunicorn (master and workers), of the database backends
serving the bench's database and of the client are printed per round (from /proc),
which is what tells the server's own cost apart from the client's.

Prints requests/second, latency percentiles and the ratios, then checks that every
accepted event was stored once. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
DATABASE = os.environ.get("BENCH_WEBHOOKS_DATABASE", "bench_broadside_webhooks")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
WEBHOOK_SECRET = "whsec_bench_0123456789abcdef"

sys.path.insert(0, str(ROOT))
from tests import processes  # noqa: E402
from tests.browser.harness import (  # noqa: E402
    create_database,
    database_url,
    drop_database,
)


def stored_events() -> int:
    import psycopg

    with psycopg.connect(database_url(DATABASE)) as conn:
        row = conn.execute("SELECT count(*) FROM subscriptions_stripeevent").fetchone()
        return int(row[0]) if row else 0


def commit_latency_ms(samples: int = 200) -> float:
    """Median time of one autocommitted single-row INSERT: the floor under each event."""
    import psycopg

    with psycopg.connect(database_url(DATABASE), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (id serial, body text)")
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_commit (body) VALUES (%s)", ["x" * 2000])
            timings.append((time.perf_counter() - started) * 1000)
        conn.execute("DROP TABLE bench_commit")
    return statistics.median(timings)


def redis_latency_ms(samples: int = 200) -> float:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        client.lpush("bench:latency", "x" * 1000)
        timings.append((time.perf_counter() - started) * 1000)
    client.delete("bench:latency")
    return statistics.median(timings)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def database_backends() -> list[int]:
    """The PostgreSQL backends connected to the bench's database (gunicorn's, kept)."""
    import psycopg

    with psycopg.connect(database_url(DATABASE), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [DATABASE],
        ).fetchall()
    return [int(row[0]) for row in rows]


class CpuMeter:
    """CPU seconds used during a round by gunicorn, the database backends and the client."""

    def __init__(self, gunicorn_pid: int) -> None:
        self.gunicorn = [gunicorn_pid, *_children(gunicorn_pid)]
        self.backends = database_backends()
        self.start = self._now()

    def _now(self) -> tuple[float, float, float]:
        return (
            sum(_cpu_seconds(pid) for pid in self.gunicorn),
            sum(_cpu_seconds(pid) for pid in self.backends),
            time.process_time(),
        )

    def per_request(self, requests: int) -> dict[str, float]:
        end = self._now()
        used = [(b - a) * 1e6 / requests for a, b in zip(self.start, end, strict=True)]
        return dict(zip(("server_us", "database_us", "client_us"), used, strict=True))


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:  # noqa: BLE001 - no Redis: fall back to the filesystem broker
        return False


def queued_tasks() -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    return int(client.llen("celery"))


def empty_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def environment(var_dir: str, use_redis: bool) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "CELERY_", "REDIS_", "EMAIL_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.webhooks_site",
            "ENV_FILE": "",  # never a developer's .env (its Telegram token, its database)
            "DATABASE_URL": database_url(DATABASE),
            "SECRET_KEY": "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SITE_URL": "http://127.0.0.1",
            "VAR_DIR": var_dir,
            "LOG_LEVEL": "WARNING",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_SECRET_KEY": "sk_test_bench_not_used",
            "PYTHONPATH": str(ROOT),
        }
    )
    if use_redis:
        env["CELERY_BROKER_URL"] = REDIS_URL
    return env


def start_gunicorn(
    env: dict[str, str], workers: int, threads: int, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn, its errors in `log`; no access log, as the figures are about the views."""
    sock = processes.bind_loopback()
    host, port = sock.getsockname()
    process = processes.start_gunicorn(
        env=env,
        log=log,
        sock=sock,
        workers=workers,
        threads=threads,
        options=["--backlog", "1024", "--error-logfile", "-"],
    )
    sock.close()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/bench/ping/", timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer in 60 s; see {log}")


# --- the load ------------------------------------------------------------------------------

_counter = iter(range(1, 10**9))
_counter_lock = threading.Lock()


def subscription_event() -> str:
    """A distinct customer.subscription.updated event, as Stripe sends it (about 2 KB)."""
    with _counter_lock:
        n = next(_counter)
    now = int(time.time())
    subscription = {
        "id": f"sub_bench{n:08d}",
        "object": "subscription",
        "customer": f"cus_bench{n:08d}",
        "status": "active",
        "cancel_at_period_end": False,
        "canceled_at": None,
        "created": now - 86400,
        "currency": "usd",
        "metadata": {"broadside_purpose": "membership", "subscriber_id": str(n)},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_bench{n:08d}",
                    "object": "subscription_item",
                    "current_period_start": now - 86400,
                    "current_period_end": now + 29 * 86400,
                    "quantity": 1,
                    "price": {
                        "id": "price_bench_monthly",
                        "object": "price",
                        "currency": "usd",
                        "unit_amount": 800,
                        "product": "prod_bench",
                        "recurring": {"interval": "month", "interval_count": 1},
                        "type": "recurring",
                    },
                }
            ],
            "has_more": False,
        },
    }
    event = {
        "id": f"evt_bench{n:08d}_{os.getpid()}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": now,
        "type": "customer.subscription.updated",
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": subscription, "previous_attributes": {"cancel_at_period_end": True}},
    }
    return json.dumps(event)


def signed(body: str) -> dict[str, str]:
    import stripe  # the library's own signing scheme, as Stripe signs

    return {
        "Content-Type": "application/json",
        "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET),
    }


def run_round(
    url: str,
    *,
    path: str,
    requests: int,
    concurrency: int,
    make_request,
    gunicorn_pid: int | None = None,
) -> dict[str, float]:
    """`requests` requests from `concurrency` threads; returns rate and latencies (ms),
    and with `gunicorn_pid` the CPU microseconds per request (`CpuMeter`)."""
    host, port = url.removeprefix("http://").split(":")
    prepared = [make_request() for _ in range(requests)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    position = iter(range(requests))

    def worker() -> None:
        local: list[float] = []
        local_statuses: dict[int, int] = {}
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                break
            method, body, headers = prepared[index]
            started = time.perf_counter()
            conn = HTTPConnection(host, int(port), timeout=30)
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            local.append((time.perf_counter() - started) * 1000)
            local_statuses[response.status] = local_statuses.get(response.status, 0) + 1
        with lock:
            latencies.extend(local)
            for status, count in local_statuses.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    meter = CpuMeter(gunicorn_pid) if gunicorn_pid else None
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": requests / elapsed,
        "p50": statistics.median(latencies),
        "p95": latencies[int(len(latencies) * 0.95) - 1],
        "ok": statuses.get(200, 0),
        "errors": requests - statuses.get(200, 0),
        **(meter.per_request(requests) if meter else {}),
    }


def cpu(result: dict[str, float]) -> str:
    return (
        f"CPU/req: server {result['server_us']:.0f} us, "
        f"database {result['database_us']:.0f} us, client {result['client_us']:.0f} us"
    )


def ping_request() -> tuple[str, bytes | None, dict[str, str]]:
    return "GET", None, {}


def webhook_request() -> tuple[str, bytes | None, dict[str, str]]:
    body = subscription_event()
    return "POST", body.encode(), signed(body)


BURST_TYPE = "customer.tax_id.updated"  # no handler: applying it only marks it processed


def burst_events(total: int) -> list[str]:
    """`total` deliveries: 80% distinct events about total/20 objects, 20% redeliveries."""
    import random

    unique = total - total // 5
    objects = max(total // 20, 1)
    now = int(time.time())
    bodies = [
        json.dumps(
            {
                "id": f"evt_burst{n:06d}",
                "object": "event",
                "api_version": "2026-10-28.endive",
                "created": now - unique + n,
                "type": BURST_TYPE,
                "livemode": False,
                "data": {"object": {"id": f"txi_burst{n % objects:05d}", "object": "tax_id"}},
            }
        )
        for n in range(unique)
    ]
    rng = random.Random(18)
    return bodies + [rng.choice(bodies) for _ in range(total - unique)]


def run_burst(url: str, env: dict[str, str], var_dir: Path, total: int, concurrency: int) -> None:
    port = processes.free_port()
    broker_url = f"redis://127.0.0.1:{port}/0"
    log = Path(var_dir) / "burst-redis.log"
    # Only the burst's events in the outbox: the rounds' events name subscriptions no
    # Stripe knows, and their failing retries are not what this measures.
    _rows("DELETE FROM subscriptions_stripeevent RETURNING id")
    bodies = iter(burst_events(total))
    print(f"\nburst: {total} signed deliveries (20% redeliveries), broker stopped")
    rate = run_round(
        url,
        path="/stripe/webhook/",
        requests=total,
        concurrency=concurrency,
        make_request=lambda: ("POST", (body := next(bodies)).encode(), signed(body)),
    )
    print(
        f"  accepted: {rate['ok']:.0f} x 200, {rate['errors']:.0f} other, "
        f"{rate['rate']:.0f} deliveries/s (p50 {rate['p50']:.1f} ms, p95 {rate['p95']:.1f} ms)"
    )
    print(f"  stored events: {stored_burst_events()}, applied so far: {applied_events()}")
    redis = processes.start_redis_server(port=port, log=log)
    started = time.monotonic()
    worker_env = {**env, "CELERY_BROKER_URL": broker_url, "STRIPE_OUTBOX_POLL_SECONDS": "1"}
    worker = processes.start_celery_worker(
        env=worker_env,
        log=Path(var_dir) / "burst-worker.log",
        hostname="bench-burst@%h",
        concurrency=2,
        beat_schedule=Path(var_dir) / "burst-beat",
    )
    try:
        unique = total - total // 5
        deadline = time.monotonic() + 600
        while applied_events() < unique and time.monotonic() < deadline:
            time.sleep(0.5)
        took = time.monotonic() - started
        applied = applied_events()
        print(
            f"  broker started; {applied} of {unique} events applied {took:.1f} s later "
            f"({applied / took:.0f} events/s, worker start included)"
        )
        print(f"  each applied once: {once_each()}; in order per object: {in_order()}")
    finally:
        processes.stop(worker)
        processes.kill(redis)


def _rows(sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(database_url(DATABASE)) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def stored_burst_events() -> int:
    return int(
        _rows("SELECT count(*) FROM subscriptions_stripeevent WHERE type = %s", (BURST_TYPE,))[0][0]
    )


def applied_events() -> int:
    return int(
        _rows(
            "SELECT count(*) FROM subscriptions_stripeevent "
            "WHERE type = %s AND processed_at IS NOT NULL",
            (BURST_TYPE,),
        )[0][0]
    )


def once_each() -> bool:
    rows = _rows(
        "SELECT count(*) FROM subscriptions_stripeevent "
        "WHERE type = %s AND (attempts <> 1 OR error <> '')",
        (BURST_TYPE,),
    )
    return rows[0][0] == 0


def in_order() -> bool:
    rows = _rows(
        "SELECT object_id, processed_at FROM subscriptions_stripeevent "
        "WHERE type = %s ORDER BY object_id, created, id",
        (BURST_TYPE,),
    )
    last: dict[str, object] = {}
    for key, processed in rows:
        if key in last and processed < last[key]:
            return False
        last[key] = processed
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    # The Procfile's web line: gthread, 2 processes x 4 threads.
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per gunicorn worker (1: sync workers)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--burst", type=int, default=0, help="then this many deliveries with the broker stopped"
    )
    args = parser.parse_args()

    use_redis = redis_available()
    print(
        f"gunicorn workers: {args.workers} x {args.threads} threads, "
        f"client threads: {args.concurrency}, ",
        end="",
    )
    print(f"{args.events} requests per round, {args.rounds} rounds, ", end="")
    print(f"broker: {'Redis db 3' if use_redis else 'filesystem'}, CPUs: {os.cpu_count()}")
    create_database(DATABASE)
    process = None
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as var_dir:
        env = environment(var_dir, use_redis)
        try:
            subprocess.run(
                [str(BIN / "python"), "manage.py", "migrate", "-v", "0"],
                cwd=ROOT,
                env=env,
                check=True,
            )
            if use_redis:
                empty_redis()
            process, url = start_gunicorn(
                env, args.workers, args.threads, Path(var_dir) / "gunicorn.log"
            )
            # Warm up both paths (imports, connections, the stripe module).
            run_round(
                url, path="/bench/ping/", requests=100, concurrency=4, make_request=ping_request
            )
            run_round(
                url,
                path="/stripe/webhook/",
                requests=100,
                concurrency=4,
                make_request=webhook_request,
            )
            run_round(
                url, path="/bench/bare/", requests=100, concurrency=4, make_request=ping_request
            )
            baseline: list[dict[str, float]] = []
            bare: list[dict[str, float]] = []
            webhook: list[dict[str, float]] = []
            rounds = {"/bench/ping/": baseline, "/bench/bare/": bare, "/stripe/webhook/": webhook}
            for number in range(1, args.rounds + 1):
                for path, results in rounds.items():
                    results.append(
                        run_round(
                            url,
                            path=path,
                            requests=args.events,
                            concurrency=args.concurrency,
                            make_request=webhook_request if "webhook" in path else ping_request,
                            gunicorn_pid=process.pid,
                        )
                    )
                ping, plain, hook = baseline[-1], bare[-1], webhook[-1]
                print(
                    f"round {number}: trivial view {ping['rate']:5.0f} req/s, "
                    f"bare view {plain['rate']:5.0f} req/s, webhook {hook['rate']:5.0f} events/s "
                    f"(p50 {hook['p50']:.1f} ms, p95 {hook['p95']:.1f} ms, "
                    f"non-200: {hook['errors']:.0f}) | ratio {hook['rate'] / ping['rate']:.2f} "
                    f"(to bare {hook['rate'] / plain['rate']:.2f})"
                )
                for name, result in (("trivial", ping), ("bare", plain), ("webhook", hook)):
                    print(f"  {name:8s} {cpu(result)}")
            ratios = [
                hook["rate"] / ping["rate"] for ping, hook in zip(baseline, webhook, strict=True)
            ]
            bare_ratios = [
                hook["rate"] / plain["rate"] for plain, hook in zip(bare, webhook, strict=True)
            ]
            print()
            print(f"trivial view:  {statistics.median(r['rate'] for r in baseline):8.0f} req/s")
            print(f"bare view:     {statistics.median(r['rate'] for r in bare):8.0f} req/s")
            print(
                f"webhook:       {statistics.median(r['rate'] for r in webhook):8.0f} "
                "signed events/s accepted (medians over rounds)"
            )
            print(
                f"ratio webhook / trivial view: median {statistics.median(ratios):.2f} "
                f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
            print(
                f"ratio webhook / bare view:    median {statistics.median(bare_ratios):.2f} "
                f"(rounds: {', '.join(f'{r:.2f}' for r in bare_ratios)})"
            )
            for name, results in (("trivial", baseline), ("bare", bare), ("webhook", webhook)):
                medians = {
                    key: statistics.median(r[key] for r in results)
                    for key in ("server_us", "database_us", "client_us")
                }
                print(f"median {name:8s} {cpu(medians)}")
            context = f"PostgreSQL INSERT+commit p50 {commit_latency_ms():.2f} ms"
            if use_redis:
                context += f", Redis LPUSH p50 {redis_latency_ms():.2f} ms"
            print(f"same run, for context: {context}")
            accepted = 100 + sum(int(r["ok"]) for r in webhook)
            stored = stored_events()
            print(f"events accepted (200): {accepted}, StripeEvent rows: {stored}", end="")
            if use_redis:
                print(f", tasks queued by the requests: {queued_tasks()}")
            else:
                print()
            print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            if args.burst:
                run_burst(url, env, Path(var_dir), args.burst, args.concurrency)
                print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            if process is not None:
                processes.stop(process)
            if use_redis:
                empty_redis()
            drop_database(DATABASE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
