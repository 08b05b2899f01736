"""`make demo`: the whole loop on the YouTube Spam Collection, against a real Label Studio.

ingest → SQL → labeling functions → label model → leakage-checked split → evaluation labels → augmentation →
service + Label Studio → round 1 (train, score, select, push the 50 most uncertain) → a SIMULATED ANNOTATOR labels
them through Label Studio's API → round 2 starts by itself → it labels again → round 3 → a per-round table and
plots in docs/.

The simulated annotator is a stand-in for a person: it asks Label Studio for its next task (`/next`, so it
gets the order a person would) and answers from the collection's own CLASS column, which was kept out of the
store at ingest. Everything it does goes through Label Studio; our service learns of it by webhooks.
"""

import argparse
import json
import secrets
import shutil
import time
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "data" / "youtube-spam" / "raw"
DOCS = ROOT / "docs"
DATASET = "youtube"
LABELS = ["ham", "spam"]
console = Console()


def step(title: str, command: str | None = None) -> None:
    console.rule(f"[bold]{title}")
    if command:
        console.print(f"[dim]$ {command}[/]", highlight=False)


def show(rows: list[dict] | pl.DataFrame, title: str | None = None) -> None:
    df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows)
    t = Table(title=title)
    for c in df.columns:
        t.add_column(c)
    for r in df.iter_rows():
        t.add_row(*("" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in r))
    console.print(t)


class SimulatedAnnotator:
    """A stand-in for a human annotator (clearly not one): it takes tasks from Label Studio's label stream as a
    person would and answers with the dataset's own label for that comment."""

    def __init__(self, url: str, token: str, project_id: int, truth: dict[int, str]):
        from labeling.studio import StudioClient

        self.client = StudioClient(url, token)
        self.project_id, self.truth = project_id, truth

    def label(self, n: int) -> list[dict]:
        from labeling.studio import choice_result

        done = []
        for _ in range(n):
            task = self.client.projects.next_task(self.project_id)
            if task is None:  # the queue is empty
                break
            record_id = int(task["data"]["record_id"])
            answer = self.truth[record_id]
            preds = task.get("predictions") or []
            shown = preds[0]["result"][0]["value"]["choices"][0] if preds and preds[0].get("result") else None
            self.client.annotations.create(task["id"], choice_result(answer), lead_time=1.0 + len(done) % 3)
            done.append({"record_id": record_id, "answer": answer, "pre_annotation": shown,
                         "score": preds[0].get("score") if preds else None})
        return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / ".demo")
    ap.add_argument("--batch", type=int, default=50, help="tasks per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--keep-server", action="store_true", help="leave Label Studio running at the end (default)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    from cli.common import quiet_third_party
    from curation.ingest import FieldMap, ingest
    from curation.labels import import_labels
    from curation.settings import Settings
    from curation.sql import run_sql
    from curation.store import Store
    from labeling.studio import server as ls_server

    quiet_third_party()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    db = args.workdir / "curate.duckdb"
    secret, api_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)

    step("1. Label Studio (its own venv, 127.0.0.1)", "python -m labeling.studio.server start")
    ls_root = ROOT / ".labelstudio"
    ls_server.install(ls_root)
    info = ls_server.start_background(ls_root)
    creds = ls_server.credentials(ls_root)
    ls = {"url": info["url"], "username": creds.username, "password": creds.password, "token": creds.token}
    console.print(f"Label Studio at {ls['url']} (user {ls['username']})")

    store = Store.open(Settings(db=db))
    step("2. Ingest the YouTube Spam Collection (CLASS kept out: the annotator will answer)",
         f"curate ingest {RAW.name}/Youtube0N-*.csv -d {DATASET} --text-field CONTENT --id-field COMMENT_ID "
         "--group-field AUTHOR --exclude-fields CLASS --labels ham,spam")
    results = []
    for path in sorted(RAW.glob("*.csv")):
        r = ingest(store, path, DATASET, fields=FieldMap(text="CONTENT", id="COMMENT_ID", group="AUTHOR",
                                                          exclude=("CLASS",)), labels=LABELS)
        results.append({"file": path.name, "rows_read": r.rows_read, "accepted": r.accepted,
                        "quarantined": r.quarantined, "duplicates": r.duplicates})
    show(results, "accepted and quarantined")

    step("3. SQL for data engineers (read-only sandbox)")
    for q in [("SELECT count(*) AS comments, count(DISTINCT input_hash) AS distinct_texts, "
               "count(DISTINCT \"group\") AS authors FROM records"),
              "SELECT \"group\" AS author, count(*) AS comments FROM records GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
              "SELECT rule, count(*) AS n FROM quarantine GROUP BY 1"]:
        console.print(f"[dim]$ curate sql \"{q}\"[/]", highlight=False)
        res = run_sql(store, q)
        show(res.frame() if res.rows else [{"(no rows)": ""}])

    step("4. Labeling functions (the Snorkel spam tutorial's 10, compiled to one DuckDB query)",
         f"curate lf apply -d {DATASET} --lfs examples/youtube_lfs.py && curate lf report --png docs/lf_summary.png")
    from labeling.weak import apply_lfs, fit_label_model, lf_report

    applied = apply_lfs(store, DATASET, ROOT / "examples" / "youtube_lfs.py")
    report = lf_report(store, DATASET, png=DOCS / "lf_summary.png")
    show([{"lf": lf["lf"], "polarity": ",".join(lf["polarity"]), "coverage": lf["coverage"],
           "overlaps": lf["overlaps"], "conflicts": lf["conflicts"], "engine": lf["engine"]} for lf in report["lfs"]],
         f"LF report: {applied.get('lf_set_id', '')} covers {report['total']['coverage']:.1%} of the comments")

    step("5. Label model → weak labels", f"curate label -d {DATASET} --model snorkel")
    lm = fit_label_model(store, DATASET, "snorkel")
    console.print({k: lm[k] for k in lm if k in ("model_id", "labeled", "unlabeled", "label_counts")})

    step("6. Leakage-checked split (authors and near-duplicates stay together)",
         f"curate split -d {DATASET} --ratios 0.8,0.1,0.1 --group-by group --seed 0 && curate split check")
    from curation.splits import check_split, make_split

    split = make_split(store, DATASET, (0.8, 0.1, 0.1), group_by="group", seed=0)
    check = check_split(store, DATASET)
    console.print({"split_id": split["split_id"], "records": split["counts"], "components": split["components"],
                   "crossing_components": check["crossing_components"]})

    step("7. Evaluation labels for val and test only (the train pool stays unlabeled)",
         f"curate labels import Youtube0N-*.csv -d {DATASET} --id-field COMMENT_ID --label-field CLASS "
         "--splits val,test")
    gold = sum(import_labels(store, p, DATASET, id_field="COMMENT_ID", label_field="CLASS",
                             splits=["val", "test"])["written"] for p in sorted(RAW.glob("*.csv")))
    console.print(f"{gold} gold labels on val/test")

    step("8. Augment the train split (copies keep their parent's label and never leave train)",
         f"curate augment -d {DATASET} --per-record 1 --augmenters keyboard,ocr,random_char")
    from curation.augment import augment

    aug = augment(store, DATASET, 1, ["keyboard", "ocr", "random_char"], seed=0)
    console.print({k: aug[k] for k in aug if k in ("made", "inserted", "dropped_duplicates")})

    from api.app import create_app
    from api.client import ServerClient
    from api.server import ServerThread, free_port
    from labeling.studio import StudioClient, ensure_project, project_title, register_webhook

    step("9. A Label Studio project for the dataset, its webhooks pointing at our service",
         f"curate studio connect -d {DATASET} --webhook-url http://127.0.0.1:PORT/webhooks/labelstudio")
    port = free_port()
    with StudioClient(ls["url"], ls["token"]) as admin:
        for old in [p for p in admin.projects.list() if p.get("title") == project_title(DATASET)]:
            admin.projects.delete(old["id"])  # a fresh store gets a fresh project (reruns start over)
        project = ensure_project(store, DATASET, admin)["project_id"]
        register_webhook(admin, project, f"http://127.0.0.1:{port}/webhooks/labelstudio", secret)
    truth = _truth(store)
    store.set_dataset_settings(DATASET, round_every=args.batch, round_size=args.batch, round_strategy="margin",
                               round_train={"epochs": args.epochs, "max_length": 64, "batch_size": 32})
    store.close()
    console.print(f"project {project}; from here on the service owns the store "
                  f"(CURATE_API_KEY=... CURATE_WEBHOOK_SECRET=... curate serve --port {port})")

    settings = Settings(db=db, api_key=api_key, webhook_secret=secret, ls_url=ls["url"], ls_token=ls["token"])
    rows = []
    with ServerThread(create_app(settings), port=port) as server, ServerClient(server.url, api_key) as api, \
            StudioClient(ls["url"], ls["token"]) as admin:
        annotator = admin.users.signup_annotator(f"simulated-annotator-{secrets.token_hex(3)}@curate.local",
                                                 secrets.token_urlsafe(12) + "A1!")
        sim = SimulatedAnnotator(ls["url"], annotator.token, project, truth)
        for number in range(1, args.rounds + 1):
            if number == 1:
                step("10. Round 1 on request: snapshot → train → score → select → push",
                     f"curate round -d {DATASET} --server {server.url}")
                job = api.request_round(DATASET, trigger="demo")
            else:
                step(f"{9 + number}. Simulated annotator labels {args.batch} tasks in Label Studio "
                     f"(most uncertain first); the webhooks start round {number}")
                answered = sim.label(args.batch)
                agree = sum(a["answer"] == a["pre_annotation"] for a in answered)
                console.print(f"{len(answered)} annotations; the pre-annotation agreed on {agree}")
                if len(answered) < args.batch:  # fewer tasks than round_every: ask for the round instead
                    api.request_round(DATASET, trigger="demo")
                job = _wait_for_round(api, number)
            final = _follow(api, job["job_id"] if "job_id" in job else job["id"], number)
            rows.append(_round_row(api, number, final))
            show([{k: v for k, v in rows[-1].items() if k != "reliability"}])
        rounds = rows

    _plots(rounds)
    step("Rounds")
    show(rounds, "per round")
    console.rule()
    console.print(f"Label Studio: [bold]{ls['url']}[/]  user [bold]{ls['username']}[/]  password "
                  f"[bold]{ls['password']}[/]  (project '{DATASET}')")
    console.print("It keeps running: look at the tasks, predictions and annotations. Stop it with "
                  "`.venv/bin/python -m labeling.studio.server stop`.")
    console.print(f"Store: {db} (try `.venv/bin/curate sql \"SELECT * FROM rounds\" --db {db}`). Plots in docs/. "
                  f"Demo took {time.perf_counter() - t0:.0f} s.")
    return 0


def _truth(store) -> dict[int, str]:
    """record id → the collection's own label, for the simulated annotator (read from the raw files)."""
    labels = pl.concat([pl.read_csv(p, columns=["COMMENT_ID", "CLASS"]) for p in sorted(RAW.glob("*.csv"))])
    ids = store.frame("SELECT record_id, coalesce(source_id, (SELECT source_id FROM store.records p "
                      "WHERE p.record_id = r.parent_id)) AS COMMENT_ID FROM store.records r WHERE dataset = ?",
                      [DATASET])
    joined = ids.join(labels.unique("COMMENT_ID"), on="COMMENT_ID")
    return {rid: LABELS[c] for rid, c in joined.select("record_id", "CLASS").iter_rows()}


def _wait_for_round(api, number: int, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items = api.rounds(DATASET)["items"]
        found = [r for r in items if r["number"] == number]
        if found and found[0].get("job_id"):
            return {"job_id": found[0]["job_id"]}
        time.sleep(0.5)
    raise RuntimeError(f"round {number} did not start within {timeout_s:g} s of the annotations")


def _follow(api, job_id: str, number: int) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"round {number}"), BarColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console) as p:
        task = p.add_task("queued", total=1.0)

        def update(job: dict) -> None:
            p.update(task, completed=job.get("progress") or 0.0, description=job.get("message") or job["status"])

        job = api.wait(job_id, on_progress=update)
    if job["status"] != "succeeded":
        raise RuntimeError(f"round {number} {job['status']}: {job.get('error')}")
    return job


def _round_row(api, number: int, job: dict) -> dict:
    r = next(x for x in api.rounds(DATASET)["items"] if x["number"] == number)
    metrics = r.get("metrics") or {}
    m = json.loads(metrics) if isinstance(metrics, str) else metrics

    def acc(part: str) -> float | None:
        v = (m.get(part) or {}).get("accuracy")
        return None if v is None else round(100 * v, 1)

    return {"round": number, "labels_used": r.get("annotations_used") or 0, "run": r.get("run_id"),
            "val_acc": acc("val"), "test_acc": acc("test"),
            "test_leakage_free_acc": acc("test_leakage_free") or acc("test"),
            "tasks_pushed": r.get("tasks_pushed"), "reliability": (m.get("test") or {}).get("reliability")}


def _plots(rounds: list[dict]) -> None:
    from training.plots import plot_calibration, plot_learning_curve

    plot_learning_curve({"test": [(r["labels_used"], r["test_acc"]) for r in rounds if r["test_acc"] is not None],
                         "val": [(r["labels_used"], r["val_acc"]) for r in rounds if r["val_acc"] is not None]},
                        DOCS / "demo_learning_curve.png", title="Demo: accuracy per round (weak labels + annotations)",
                        ylabel="accuracy (%)")
    plot_calibration({f"round {r['round']}": r["reliability"] for r in rounds if r.get("reliability")},
                     DOCS / "demo_calibration.png", title="Demo: calibration on test, per round")
    for r in rounds:
        r.pop("reliability", None)
    console.print("plots: docs/lf_summary.png, docs/demo_learning_curve.png, docs/demo_calibration.png")


if __name__ == "__main__":
    raise SystemExit(main())
