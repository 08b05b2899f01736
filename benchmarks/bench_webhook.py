"""Webhook acknowledgement latency: idle server vs. the same server while a round (train → score → select) runs.

    .venv/bin/python -m benchmarks.bench_webhook [--quick] [--events N] [--json]

Real parts: the app under uvicorn on 127.0.0.1 (HTTP keep-alive client), the real Label Studio webhook payload
handled by `labeling.studio.handle_webhook`, a real round (LoRA training of MiniLM on CPU, scoring, selection) on
the WRENCH YouTube data. Label Studio itself is not involved (the round's push is skipped: no LS configured), so
the figure is our receiver's answer time, which Label Studio waits for inside the annotator's request (1 s
timeout, no retry without Redis).

Figures (each beside its baseline from the same run): ack latency median / p95 under a running round vs. idle;
and what a receiver that stored the event inside the request would take under the same round (the direct
`handle_webhook` call through the single-writer store), vs. idle. Goal: median ack ≤ 50 ms under a running round.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import latency_stats, webhook_event

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "youtube-spam" / "wrench" / "youtube.jsonl"


def _dataset(path: Path, quick: bool) -> None:
    rows = [json.loads(line) for line in DATA.open()]
    n_train = 200 if quick else 1586
    train = [r for r in rows if r["split"] == "train"][:n_train]
    val = [r for r in rows if r["split"] in ("val", "valid")][:40 if quick else 120]
    test = [r for r in rows if r["split"] == "test"][:40 if quick else 250]
    with path.open("w") as f:
        for i, r in enumerate(train + val + test):
            label = r["label"] if (r["split"] != "train" or i < 40) else None
            f.write(json.dumps({"id": r["id"], "text": r["text"], "label": label, "split": r["split"]}) + "\n")





def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data and few events (smoke run)")
    ap.add_argument("--events", type=int, default=None, help="events per phase (default 50 quick / 300 full)")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="pause between events under the round")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    n_events = args.events or (50 if args.quick else 300)

    import logging

    import httpx
    from pydantic import SecretStr

    from api.app import create_app
    from api.server import ServerThread
    from curation.ingest import FieldMap, ingest
    from curation.settings import Settings
    from curation.splits import make_split
    from curation.store import Store, now
    from labeling.studio import handle_webhook

    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass

    secret = "bench-secret"
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        tmp = Path(tmp)
        settings = Settings(db=tmp / "b.duckdb", api_key=SecretStr("bench-key"), webhook_secret=SecretStr(secret))
        store = Store.open(settings)
        _dataset(tmp / "yt.jsonl", args.quick)
        ingest(store, tmp / "yt.jsonl", "yt", fields=FieldMap(text="text", label="label", id="id"),
               labels=["ham", "spam"])
        make_split(store, "yt", from_column="split")
        store.set_dataset_settings("yt", round_every=0, round_size=20,
                                   round_train={"epochs": 1, "max_length": 64, "patience": 0,
                                                "allow_leakage": True})
        with store.transaction() as cur:
            cur.execute("INSERT INTO store.ls_projects VALUES ('yt', 1, NULL, NULL, ?)", [now()])
        pool = store.query("SELECT r.record_id, r.input_hash FROM store.records r LEFT JOIN store.gold_labels g "
                           "USING (record_id) WHERE r.dataset = 'yt' AND g.record_id IS NULL ORDER BY 1")
        pool = pool[:20]   # events re-annotate the same 20 records, so the round's pool never runs dry

        def event(i: int) -> dict:   # unique annotation ids; records cycle through those 20
            rid, h = pool[i % len(pool)]
            return webhook_event(i, rid, h)

        events = [event(i) for i in range(5 + 2 * n_events)]

        app = create_app(settings, store, studio=None)
        with ServerThread(app) as server:
            client = httpx.Client(base_url=server.url, headers={"X-Curate-Webhook-Token": secret}, timeout=10)
            recorder = app.state.curate.recorder

            def post(ev: dict) -> float:
                t0 = time.perf_counter()
                r = client.post("/webhooks/labelstudio", json=ev)
                dt = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                return dt

            for ev in events[:5]:   # warm-up (connection, first imports)
                post(ev)
            recorder.drain(30)

            # idle: the server does nothing else
            idle_ack = [post(ev) for ev in events[5:5 + n_events]]
            recorder.drain(60)
            idle_inline = []
            for ev in events[5 + n_events:5 + 2 * n_events]:
                t0 = time.perf_counter()
                handle_webhook(store, ev)
                idle_inline.append(time.perf_counter() - t0)

            # under a running round
            api = httpx.Client(base_url=server.url, headers={"X-API-Key": "bench-key"}, timeout=30)
            job_id = api.post("/datasets/yt/rounds", json={"trigger": "bench"}).json()["job_id"]
            while api.get(f"/jobs/{job_id}").json()["status"] == "queued":
                time.sleep(0.05)
            busy_ack, busy_inline, phases = [], [], {}
            max_acks = 20 * n_events
            t_round = time.perf_counter()
            i = 0
            state = {"status": "running", "message": ""}

            def watch() -> None:
                while state["status"] == "running":
                    j = api.get(f"/jobs/{job_id}").json()
                    state.update(status=j["status"], message=j.get("message") or "")
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            while state["status"] == "running" and len(busy_ack) < max_acks:
                ev = event(len(events) + i)
                if i % 2 == 0:
                    busy_ack.append(post(ev))
                    phases.setdefault(state["message"].split(":")[0], []).append(busy_ack[-1])
                else:
                    t0 = time.perf_counter()
                    handle_webhook(store, ev)
                    busy_inline.append(time.perf_counter() - t0)
                i += 1
                time.sleep(args.interval_ms / 1000)
            watcher.join(1800)
            round_s = time.perf_counter() - t_round
            job = api.get(f"/jobs/{job_id}").json()
            recorder.drain(60)
            stats = recorder.stats
            client.close()
            api.close()
        store.close()

    idle, busy = latency_stats(idle_ack), latency_stats(busy_ack)
    i_idle, i_busy = latency_stats(idle_inline), latency_stats(busy_inline)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    result = {
        "events_per_phase": n_events, "round_status": job["status"], "round_error": job.get("error"),
        "round_seconds": round(round_s, 1),
        "ack_idle": idle, "ack_under_round": busy,
        "ack_median_ratio": ratio(busy["median_ms"], idle["median_ms"]),
        "ack_p95_ratio": ratio(busy["p95_ms"], idle["p95_ms"]),
        "inline_record_idle": i_idle, "inline_record_under_round": i_busy,
        "inline_median_ratio": ratio(i_busy["median_ms"], i_idle["median_ms"]),
        "ack_under_round_by_step": {k or "start": latency_stats(v)["median_ms"] for k, v in phases.items()},
        "recorder": {"received": stats.received, "recorded": stats.recorded, "failed": stats.failed},
        "goal_median_ms": 50, "goal_met": busy["median_ms"] is not None and busy["median_ms"] <= 50,
    }
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        print(f"round: {job['status']} in {round_s:.1f} s ({busy['n']} acks sent while it ran)")
        print(f"{'figure':44} {'under round':>12} {'idle (base)':>12} {'ratio':>7}")
        for name, a, b in (("webhook ack median ms", busy["median_ms"], idle["median_ms"]),
                           ("webhook ack p95 ms", busy["p95_ms"], idle["p95_ms"]),
                           ("inline record median ms (sync receiver)", i_busy["median_ms"], i_idle["median_ms"]),
                           ("inline record p95 ms (sync receiver)", i_busy["p95_ms"], i_idle["p95_ms"])):
            print(f"{name:44} {a!s:>12} {b!s:>12} {ratio(a, b)!s:>7}")
        print(f"ack median by round step: {result['ack_under_round_by_step']}")
        print(f"recorder: {result['recorder']}; goal median <= 50 ms under a round: "
              f"{'met' if result['goal_met'] else 'NOT met'}")
    return result


if __name__ == "__main__":
    main()
