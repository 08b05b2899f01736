"""Load test: 40 heavy SQL queries and a Label Studio webhook stream at once; webhook acknowledgement and /health
latency, idle and under the SQL load.

    .venv/bin/python -m benchmarks.load_api [--duration 20] [--clients 40] [--rate 50] [--json]

Bounded and loopback only: the real app under uvicorn on 127.0.0.1 (a free port) in its own process, keys configured (admin key and
webhook secret), the WRENCH YouTube data (1,956 comments) in a temporary store; every part stops by itself after
`--duration` seconds (queries carry a server-side timeout too). 40 client threads each send a heavy SQL query (a
filtered self cross join, seconds of CPU each) and send it again when it ends; a query the server turns away
(429: as many running as CURATE_SQL_MAX_CONCURRENT) is retried after its Retry-After. One thread sends real
ANNOTATION_CREATED events at `--rate` per second and times each acknowledgement; one polls /health every 0.2 s.

Goal (issue 12): webhook ack p95 <= 50 ms while the 40 heavy queries run (Label Studio waits for the ack inside
the annotator's request with a 1 s timeout and does not retry). The baseline is the same stream on the idle server
in the same run.
"""

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydantic import SecretStr

from benchmarks.common import latency_stats, webhook_event

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "youtube-spam" / "wrench" / "youtube.jsonl"
KEY, SECRET = "load-admin-key", "load-hook-secret"
HEAVY_SQL = ("SELECT a.label, count(*) AS n FROM records a, records b "
             "WHERE a.record_id < b.record_id AND jaccard(lower(a.text), lower(b.text)) > 0.{salt} GROUP BY 1")
GOAL_P95_MS = 50.0








def _webhooks(url: str, records: list[tuple[int, str]], rate: float, until: float, start_i: int) -> list[float]:
    import httpx

    lat, i = [], start_i
    with httpx.Client(base_url=url, headers={"X-Curate-Webhook-Token": SECRET}, timeout=10) as c:
        nxt = time.monotonic()
        while time.monotonic() < until:
            rid, h = records[i % len(records)]
            t = time.perf_counter()
            r = c.post("/webhooks/labelstudio", json=webhook_event(i, rid, h))
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"webhook answered {r.status_code}: {r.text[:200]}")
            i += 1
            nxt += 1 / rate
            time.sleep(max(0.0, nxt - time.monotonic()))
    return lat


def _health(url: str, until: float, out: list[float]) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=10) as c:
        while time.monotonic() < until:
            t = time.perf_counter()
            c.get("/health").raise_for_status()
            out.append(time.perf_counter() - t)
            time.sleep(0.2)


def _sql_client(url: str, n: int, until: float, counts: dict, lock: threading.Lock) -> None:
    import httpx

    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as c:
        while time.monotonic() < until:
            left = until - time.monotonic()
            body = {"query": HEAVY_SQL.format(salt=(n % 9) + 1), "timeout_s": max(1.0, min(10.0, left))}
            try:
                r = c.post("/sql", json=body)
            except Exception as e:  # noqa: BLE001 - counted; the load must go on
                key = f"error:{type(e).__name__}"
            else:
                key = {200: "ok", 429: "refused_429"}.get(r.status_code, f"http_{r.status_code}")
                if r.status_code == 429:
                    time.sleep(float(r.headers.get("Retry-After", "1")))
            with lock:
                counts[key] = counts.get(key, 0) + 1


def _serve(db: str, port: int) -> None:
    import uvicorn

    from api.app import create_app
    from curation.settings import Settings

    settings = Settings(db=Path(db), api_key=SecretStr(KEY), webhook_secret=SecretStr(SECRET))
    uvicorn.run(create_app(settings, bind=("127.0.0.1", port)), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def _wait_up(url: str, server: "multiprocessing.Process", timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.is_alive():
            raise RuntimeError("the server process stopped during startup")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server on {url} did not start within {timeout:g} s")


def _events_stored(url: str, sent: int, timeout: float = 30.0) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=10) as c:
        while True:
            ev = c.get("/status").json()["webhook_events"]
            if ev["recorded"] + ev["failed"] >= sent or time.monotonic() > deadline:
                return ev | {"sent": sent}
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load (bounded: at most 120)")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of the idle baseline")
    ap.add_argument("--clients", type=int, default=40, help="concurrent heavy SQL clients")
    ap.add_argument("--rate", type=float, default=50.0, help="webhook events per second")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    args.duration = min(args.duration, 120.0)

    from api.server import free_port
    from curation.ingest import FieldMap, ingest
    from curation.settings import Settings
    from curation.store import Store

    with tempfile.TemporaryDirectory(prefix="curate-load-") as tmp:
        db = Path(tmp) / "load.duckdb"
        settings = Settings(db=db, api_key=SecretStr(KEY), webhook_secret=SecretStr(SECRET))
        with Store.open(settings) as store:
            ingest(store, DATA, "yt", fields=FieldMap(text="text", label="label", id="id"), labels=["ham", "spam"])
            with store.transaction() as cur:
                cur.execute("INSERT INTO store.ls_projects VALUES ('yt', 1, NULL, NULL, now())")
            store.set_dataset_settings("yt", round_every=0)   # events are stored; no rounds start
            records = store.query("SELECT record_id, input_hash FROM store.records WHERE dataset = 'yt' ORDER BY 1")
        # the server in its own process (as `curate serve` runs), so the load generator's threads do not share
        # its interpreter; loopback only, stopped at the end whatever happens
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(str(db), port), daemon=True)
        server.start()
        try:
            _wait_up(url, server)
            t0 = time.monotonic()
            idle_health: list[float] = []
            h = threading.Thread(target=_health, args=(url, t0 + args.idle, idle_health))
            h.start()
            idle_ack = _webhooks(url, records, args.rate, t0 + args.idle, 0)
            h.join()

            counts: dict[str, int] = {}
            lock = threading.Lock()
            until = time.monotonic() + args.duration
            sql_threads = [threading.Thread(target=_sql_client, args=(url, n, until, counts, lock), daemon=True)
                           for n in range(args.clients)]
            for t in sql_threads:
                t.start()
            time.sleep(0.5)   # let the queries start
            load_health: list[float] = []
            h = threading.Thread(target=_health, args=(url, until, load_health))
            h.start()
            load_ack = _webhooks(url, records, args.rate, until, len(idle_ack))
            h.join()
            for t in sql_threads:
                t.join(max(1.0, until + 15 - time.monotonic()))
            events = _events_stored(url, len(idle_ack) + len(load_ack))
        finally:
            server.terminate()
            server.join(30)
            if server.is_alive():
                server.kill()

    load = latency_stats(load_ack, median="p50_ms")
    result = {
        "benchmark": "load_api", "duration_s": args.duration, "sql_clients": args.clients, "rate": args.rate,
        "ack_idle": latency_stats(idle_ack, median="p50_ms"), "ack_under_sql": load,
        "health_idle": latency_stats(idle_health, median="p50_ms"),
        "health_under_sql": latency_stats(load_health, median="p50_ms"),
        "sql": dict(sorted(counts.items())), "webhook_events": events,
        "goal": f"ack p95 <= {GOAL_P95_MS:g} ms under {args.clients} heavy SQL queries",
        "goal_met": load["p95_ms"] is not None and load["p95_ms"] <= GOAL_P95_MS,
    }
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for k in ("ack_idle", "ack_under_sql", "health_idle", "health_under_sql"):
            s = result[k]
            print(f"{k:18s} n={s['n']:5d}  p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms  max {s['max_ms']} ms")
        print(f"sql: {result['sql']}   webhook events: {events}")
        print(f"goal: {result['goal']}: {'met' if result['goal_met'] else 'NOT met'}")
    return result


if __name__ == "__main__":
    main()
