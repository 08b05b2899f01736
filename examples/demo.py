"""`make demo`: the whole loop on the YouTube Spam Collection, against a real Label Studio.

ingest → SQL → labeling functions → label model → leakage-checked split → evaluation labels → augmentation (a
sample) → service + Label Studio → round 1 (train, score, select, push the 50 most uncertain) → a SIMULATED TEAM of
three annotators (accuracies 0.95, 0.9 and a careless 0.6) labels them, two annotators per task → agreement and a
Dawid-Skene consensus → round 2 → one annotator labels its 50 → round 3 starts by itself → a label-issue review
(cleanlab suspects → Label Studio → the reviewer's outcome) → a per-round table, plots, and the time of each step.

The simulated annotators are stand-ins for people: each asks Label Studio for its next task (`/next`, so it gets
the order a person would) and answers from the collection's own CLASS column, which was kept out of the store at
ingest — with its accuracy: a wrong answer with probability 1 - accuracy (seeded). Everything they do goes through
Label Studio; our service learns of it by webhooks.

Sized for two CPU cores (`--epochs 2 --max-length 64 --augment 200`): every round trains a real LoRA adapter on
all train records (weak labels + the annotations so far) and scores the whole pool; only the number of epochs and
of augmented copies is small. Larger settings: `--epochs 5 --augment 0` (0 = every train record gets a copy).
"""

import argparse
import json
import random
import secrets
import shutil
import threading
import time
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from examples.steps import Steps, install_timing, proc_cpu_seconds

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
    person would and answers with the dataset's own label for that comment — wrong with probability
    1 - `accuracy` (seeded), so a team can have a careless member."""

    def __init__(self, name: str, url: str, token: str, project_id: int, truth: dict[int, str],
                 accuracy: float = 1.0, seed: int = 0):
        from labeling.studio import StudioClient

        self.name, self.accuracy = name, accuracy
        self.client = StudioClient(url, token)
        self.project_id, self.truth = project_id, truth
        self.rng = random.Random(seed)
        self.done: list[dict] = []

    def answer(self, record_id: int) -> str:
        right = self.truth[record_id]
        if self.rng.random() < self.accuracy:
            return right
        return next(lab for lab in LABELS if lab != right)

    def label_one(self) -> dict | None:
        """Annotate the next task Label Studio serves this annotator; None when its queue is empty."""
        from labeling.studio import choice_result

        task = self.client.projects.next_task(self.project_id)
        if task is None:
            return None
        record_id = int(task["data"]["record_id"])
        answer = self.answer(record_id)
        preds = task.get("predictions") or []
        shown = preds[0]["result"][0]["value"]["choices"][0] if preds and preds[0].get("result") else None
        self.client.annotations.create(task["id"], choice_result(answer), project_id=self.project_id,
                                       lead_time=1.0 + len(self.done) % 3)
        row = {"record_id": record_id, "answer": answer, "pre_annotation": shown, "annotator": self.name,
               "right": answer == self.truth[record_id], "task": task}
        self.done.append(row)
        return row

    def label(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            row = self.label_one()
            if row is None:  # the queue is empty
                break
            out.append(row)
        return out

    def close(self) -> None:
        self.client.close()


def label_as_team(team: list[SimulatedAnnotator]) -> list[dict]:
    """Each annotator in turn takes its next task until Label Studio has none left for anyone (with K
    annotations per task, every task ends up with K answers from K different people)."""
    out, active = [], list(team)
    while active:
        for member in list(active):
            row = member.label_one()
            if row is None:
                active.remove(member)
            else:
                out.append(row)
    return out


TEAM = [("annotator-a", 0.95), ("annotator-b", 0.9), ("careless-c", 0.6)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / ".demo")
    ap.add_argument("--batch", type=int, default=50, help="tasks per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="LoRA epochs per round (CPU-sized; 5 is the default "
                                                           "of `curate train`)")
    ap.add_argument("--max-length", type=int, default=64, help="tokens per comment (64 covers 89%% of them)")
    ap.add_argument("--augment", type=int, default=200, help="train records that get an augmented copy "
                                                              "(0: every one)")
    ap.add_argument("--annotators-per-task", type=int, default=2,
                    help="round 1's tasks go to this many of the simulated team (1: one annotator throughout)")
    ap.add_argument("--review", type=int, default=5, help="label-issue suspects sent to review (0: skip)")
    ap.add_argument("--install-timing", type=Path, default=None, help="JSON from examples/timed.py (Makefile)")
    args = ap.parse_args(argv)
    steps = Steps()
    t0 = time.perf_counter()

    with steps("imports (torch, transformers, duckdb, ...)"):
        from cli.common import quiet_third_party
        from curation.ingest import FieldMap, ingest
        from curation.labels import import_labels
        from curation.settings import Settings
        from curation.sql import run_sql
        from curation.store import Store
        from labeling.studio import server as ls_server

    quiet_third_party()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for old in args.workdir.iterdir():   # a fresh store; `make demo-llm` keeps its own in <workdir>/llm
        if old.name != "llm":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    db = args.workdir / "curate.duckdb"
    secret, api_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)

    step("1. Label Studio (its own venv, 127.0.0.1), started in the background while the data is prepared",
         "python -m labeling.studio.server start")
    ls_root = ROOT / ".labelstudio"
    ls_started: dict = {}

    def start_ls() -> None:
        t = time.perf_counter()
        try:
            ls_server.install(ls_root)
            ls_started["info"] = ls_server.start_background(ls_root)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread below
            ls_started["error"] = e
        ls_started["seconds"] = time.perf_counter() - t

    ls_thread = threading.Thread(target=start_ls, name="labelstudio-start", daemon=True)
    ls_thread.start()

    store = Store.open(Settings(db=db))
    step("2. Ingest the YouTube Spam Collection (CLASS kept out: the annotators will answer)",
         f"curate ingest {RAW.name}/Youtube0N-*.csv -d {DATASET} --text-field CONTENT --id-field COMMENT_ID "
         "--group-field AUTHOR --exclude-fields CLASS --labels ham,spam")
    results = []
    with steps("ingest 5 CSVs (1,956 comments)"):
        for path in sorted(RAW.glob("*.csv")):
            r = ingest(store, path, DATASET, fields=FieldMap(text="CONTENT", id="COMMENT_ID", group="AUTHOR",
                                                              exclude=("CLASS",)), labels=LABELS)
            results.append({"file": path.name, "rows_read": r.rows_read, "accepted": r.accepted,
                            "quarantined": r.quarantined, "duplicates": r.duplicates})
    show(results, "accepted and quarantined")

    step("3. SQL for data engineers (read-only sandbox)")
    with steps("SQL sandbox (3 queries)"):
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

    with steps("labeling functions + LF report"):
        applied = apply_lfs(store, DATASET, ROOT / "examples" / "youtube_lfs.py")
        report = lf_report(store, DATASET, png=DOCS / "lf_summary.png")
    show([{"lf": lf["lf"], "polarity": ",".join(lf["polarity"]), "coverage": lf["coverage"],
           "overlaps": lf["overlaps"], "conflicts": lf["conflicts"], "engine": lf["engine"]} for lf in report["lfs"]],
         f"LF report: {applied.get('lf_set_id', '')} covers {report['total']['coverage']:.1%} of the comments")

    step("5. Label model → weak labels", f"curate label -d {DATASET} --model snorkel")
    with steps("label model (snorkel)"):
        lm = fit_label_model(store, DATASET, "snorkel")
    console.print({k: lm[k] for k in lm if k in ("model_id", "labeled", "unlabeled", "label_counts")})

    step("6. Leakage-checked split (authors and near-duplicates stay together)",
         f"curate split -d {DATASET} --ratios 0.8,0.1,0.1 --group-by group --seed 0 && curate split check")
    from curation.splits import check_split, make_split

    with steps("leakage-checked split + check"):
        split = make_split(store, DATASET, (0.8, 0.1, 0.1), group_by="group", seed=0)
        check = check_split(store, DATASET)
    console.print({"split_id": split["split_id"], "records": split["counts"], "components": split["components"],
                   "crossing_components": check["crossing_components"]})

    step("7. Evaluation labels for val and test only (the train pool stays unlabeled)",
         f"curate labels import Youtube0N-*.csv -d {DATASET} --id-field COMMENT_ID --label-field CLASS "
         "--splits val,test")
    with steps("gold labels for val/test"):
        gold = sum(import_labels(store, p, DATASET, id_field="COMMENT_ID", label_field="CLASS",
                                 splits=["val", "test"])["written"] for p in sorted(RAW.glob("*.csv")))
    console.print(f"{gold} gold labels on val/test")

    limit = args.augment or None
    step(f"8. Augment {'a sample of ' + str(limit) + ' train records' if limit else 'the train split'} (copies "
         "keep their parent's label and never leave train)",
         f"curate augment -d {DATASET} --per-record 1 --augmenters keyboard,ocr,random_char"
         + (f" --limit {limit}" if limit else ""))
    from curation.augment import augment

    with steps(f"augment ({limit or 'all'} train records)"):
        aug = augment(store, DATASET, 1, ["keyboard", "ocr", "random_char"], seed=0, limit=limit)
    console.print({k: aug[k] for k in aug if k in ("made", "inserted", "dropped_duplicates")})

    from api.app import create_app
    from api.client import ServerClient
    from api.server import ServerThread, free_port
    from labeling.studio import StudioClient, ensure_project, project_title, register_webhook

    k = max(1, args.annotators_per_task)
    step("9. A Label Studio project for the dataset, its webhooks pointing at our service",
         f"curate studio connect -d {DATASET} --annotators-per-task {k} "
         "--webhook-url http://127.0.0.1:PORT/webhooks/labelstudio")
    with steps("wait for Label Studio", "started in a thread at step 1"):
        ls_thread.join()
    if "error" in ls_started:
        raise ls_started["error"]
    info = ls_started["info"]
    creds = ls_server.credentials(ls_root)
    ls = {"url": info["url"], "username": creds.username, "password": creds.password, "token": creds.token}
    console.print(f"Label Studio at {ls['url']} (user {ls['username']}); "
                  f"{'started' if info.get('started') else 'already running'} in {ls_started['seconds']:.0f} s")
    port = free_port()
    with steps("Label Studio project + webhook"), StudioClient(ls["url"], ls["token"]) as admin:
        for old in [p for p in admin.projects.list() if p.get("title") == project_title(DATASET)]:
            admin.projects.delete(old["id"])  # a fresh store gets a fresh project (reruns start over)
        project = ensure_project(store, DATASET, admin, annotators_per_task=k)["project_id"]
        register_webhook(admin, project, f"http://127.0.0.1:{port}/webhooks/labelstudio", secret)
    truth = _truth(store)
    # with a team on round 1 the rounds after it are requested explicitly once agreement and consensus are done;
    # later rounds start by themselves after `batch` annotations
    store.set_dataset_settings(DATASET, round_every=0 if k > 1 else args.batch, round_size=args.batch,
                               round_strategy="margin",
                               round_train={"epochs": args.epochs, "max_length": args.max_length, "batch_size": 32})
    store.close()
    console.print(f"project {project}; from here on the service owns the store "
                  f"(CURATE_API_KEY=... CURATE_WEBHOOK_SECRET=... curate serve --port {port})")

    settings = Settings(db=db, api_key=api_key, webhook_secret=secret, ls_url=ls["url"], ls_token=ls["token"])
    rows: list[dict] = []
    quality: dict = {}
    team: list[SimulatedAnnotator] = []
    n = 9
    with ServerThread(create_app(settings), port=port) as server, ServerClient(server.url, api_key) as api, \
            StudioClient(ls["url"], ls["token"]) as admin:
        with steps("sign up the simulated annotators"):
            for i, (name, acc) in enumerate(TEAM if k > 1 else TEAM[:1]):
                person = admin.users.signup_annotator(f"{name}-sim{secrets.token_hex(3)}@curate.local",
                                                      secrets.token_urlsafe(12) + "A1!")
                team.append(SimulatedAnnotator(name, ls["url"], person.token, project, truth, acc, seed=i))
                NAMES.update({person.email: name, f"ls-user:{person.id}": name})
        console.print("simulated annotators (stand-ins for people): "
                      + ", ".join(f"{m.name} (accuracy {m.accuracy})" for m in team))
        for number in range(1, args.rounds + 1):
            n += 1
            if number == 1:
                step(f"{n}. Round 1 on request: snapshot → train → score → select → push",
                     f"curate round -d {DATASET} --server {server.url}")
                job = api.request_round(DATASET, trigger="demo")
            elif number == 2 and k > 1:
                step(f"{n}. The team labels round 1's {args.batch} tasks in Label Studio, {k} annotators per task "
                     "(most uncertain first)")
                with steps(f"team labels round 1 ({k} per task)"):
                    answered = label_as_team(team)
                _show_answers(answered)
                n += 1
                quality = _team_quality(api, steps, n)
                n += 2
                step(f"{n}. Back to one annotator per task; round 2 on request, later rounds start by themselves",
                     f"curate studio connect -d {DATASET} --annotators-per-task 1 && curate round -d {DATASET}")
                admin.projects.update(project, maximum_annotations=1)
                api.set_round_settings(DATASET, round_every=args.batch)
                job = api.request_round(DATASET, trigger="demo")
            else:
                step(f"{n}. {team[0].name} labels {args.batch} tasks in Label Studio (most uncertain first); "
                     f"the webhooks start round {number}")
                with steps(f"{team[0].name} labels {args.batch} tasks"):
                    answered = team[0].label(args.batch)
                _show_answers(answered)
                if len(answered) < args.batch:  # fewer tasks than round_every: ask for the round instead
                    api.request_round(DATASET, trigger="demo")
                job = _wait_for_round(api, number)
            with steps(f"round {number}: pull, snapshot, train, score, select, push"):
                final = _follow(api, job["job_id"] if "job_id" in job else job["id"], number)
            rows.append(_round_row(api, number, final))
            show([{k2: v for k2, v in rows[-1].items() if k2 != "reliability"}])
        rounds = rows

    store = Store.open(Settings(db=db))
    try:
        with steps("agreement heatmap"):
            from labeling.agreement import dataset_agreement

            dataset_agreement(store, DATASET, png=DOCS / "demo_agreement.png")
        if args.review:
            n += 1
            review = _label_issue_review(store, ls, project, truth, args.review, steps, n)
        else:
            review = None
    finally:
        store.close()
        for m in team:
            m.close()

    with steps("plots"):
        _plots(rounds)
    step("Rounds")
    show(rounds, "per round: accuracy (%), seconds (other = pull + score + select + push); labels = annotations"
         + (" (round 2's 100 came from 50 tasks × 2 annotators)" if k > 1 else ""))
    if quality:
        show(quality["team"], "the simulated team: true accuracy vs what the consensus estimated")
    if review:
        show(review, "label-issue review outcomes")
    console.rule()
    steps.table(console, install_timing(args.install_timing),
                {"Label Studio server CPU s (its own process, whole life)": proc_cpu_seconds(info.get("pid"))})
    console.print(f"Label Studio: [bold]{ls['url']}[/]  user [bold]{ls['username']}[/]  password "
                  f"[bold]{ls['password']}[/]  (project '{DATASET}')")
    console.print("It keeps running: look at the tasks, predictions and annotations. Stop it with "
                  "`.venv/bin/python -m labeling.studio.server stop`.")
    console.print(f"Store: {db} (try `.venv/bin/curate sql \"SELECT * FROM rounds\" --db {db}`). Plots in docs/. "
                  f"Demo took {time.perf_counter() - t0:.0f} s.")
    return 0


def _show_answers(answered: list[dict]) -> None:
    by: dict[str, list[dict]] = {}
    for a in answered:
        by.setdefault(a["annotator"], []).append(a)
    show([{"annotator": name, "annotations": len(xs), "right": sum(x["right"] for x in xs),
           "agreed with the pre-annotation": sum(x["answer"] == x["pre_annotation"] for x in xs)}
          for name, xs in by.items()], f"{len(answered)} annotations")


NAMES: dict[str, str] = {}     # Label Studio's e-mail or "ls-user:<id>" (webhooks carry the id) → our name


def _who(annotator: str) -> str:
    """careless-c-sim1a2b3c@curate.local or ls-user:4 → careless-c"""
    return NAMES.get(annotator, annotator)


def _team_quality(api, steps: Steps, n: int) -> dict:
    """Agreement, then a Dawid-Skene consensus: the service's routes (it owns the store now)."""
    step(f"{n}. Inter-annotator agreement", f"curate agreement -d {DATASET} --png docs/demo_agreement.png")
    with steps("agreement"):
        agr = api.request("GET", f"/datasets/{DATASET}/agreement", params={"method": "dawid_skene"})
    console.print({"items": agr["items"], "items with ≥2 answers": agr["items_multi"],
                   "annotators": agr["annotators"], **agr["overall"]})
    show([{**a, "annotator": _who(a["annotator"])} for a in agr["per_annotator"]],
         "per annotator (agreement with the Dawid-Skene consensus)")
    show([{"a": _who(p["a"]), "b": _who(p["b"]), **{k: v for k, v in p.items() if k not in ("a", "b")}}
          for p in agr["pairs"]], "pairs (Cohen's kappa; the heatmap: docs/demo_agreement.png)")
    step(f"{n + 1}. Consensus gold labels: Dawid-Skene weighs each annotator by its estimated accuracy",
         f"curate consensus -d {DATASET} --method dawid_skene")
    with steps("consensus (dawid_skene)"):
        cons = api.request("POST", f"/datasets/{DATASET}/consensus", json={"method": "dawid_skene"})
    console.print({k: v for k, v in cons.items() if k not in ("annotators", "low_record_ids", "dataset")})
    truth = dict(TEAM)
    team = [{"annotator": _who(a["annotator"]), "true accuracy": truth.get(_who(a["annotator"])),
             "estimated accuracy (Dawid-Skene)": a.get("accuracy"), "items": a.get("items")}
            for a in cons.get("annotators") or []]
    show(team, "the careless member shows in the estimate and is down-weighted")
    return {"agreement": agr, "consensus": cons, "team": team}


def _label_issue_review(store, ls: dict, project: int, truth: dict[int, str], top: int, steps: Steps,
                        n: int) -> list[dict]:
    """cleanlab on the gold labels → the most suspect go to Label Studio with the suggested label pre-annotated
    → the reviewer answers → the pull records each outcome (confirmed / corrected)."""
    from labeling.label_issues import detect_label_issues, list_issues, select_issues
    from labeling.studio import StudioClient, choice_result, pull_annotations, push_selection
    from training.config import default_base_model

    step(f"{n}. Label-issue review: out-of-fold probabilities (frozen encoder + logistic regression) → cleanlab",
         f"curate label-issues -d {DATASET} && curate select -d {DATASET} --strategy label_issues --n {top} && "
         f"curate studio push SEL && (the reviewer answers) && curate studio pull -d {DATASET}")
    with steps("label-issues (embeddings + 5-fold CV + cleanlab)"):
        found = detect_label_issues(store, DATASET, labels="gold", top=top, base_model=default_base_model())
    console.print({k: v for k, v in found.items() if k not in ("suspects", "per_label")})
    if not found.get("suspects"):
        console.print("no suspect labels: nothing to review")
        return []
    show([{"record_id": s["record_id"], "label": s["label"], "suggested": s["suggested"], "score": s["score"],
           "text": (s.get("text") or "")[:60]} for s in found["suspects"][:top]], "most suspect gold labels")
    with steps(f"review {top} suspects in Label Studio"), StudioClient(ls["url"], ls["token"]) as admin:
        sel = select_issues(store, DATASET, min(top, len(found["suspects"])))
        pushed = push_selection(store, sel["selection_id"], client=admin)
        console.print({"selection": sel["selection_id"], **{k: v for k, v in pushed.items()
                                                            if k in ("created", "reopened", "project_id")}})
        # a reviewer who has not labeled these records yet (Label Studio never serves a task twice to one person)
        person = admin.users.signup_annotator(f"reviewer-sim{secrets.token_hex(3)}@curate.local",
                                              secrets.token_urlsafe(12) + "A1!")
        reviewer = SimulatedAnnotator("reviewer", ls["url"], person.token, project, truth, accuracy=1.0)
        answered = []
        for _ in range(top):
            task = reviewer.client.projects.next_task(project)
            if task is None or task["data"].get("review") != "label_issue":
                break       # the review tasks come first; round 3's open tasks stay for the annotators
            answer = reviewer.answer(int(task["data"]["record_id"]))
            reviewer.client.annotations.create(task["id"], choice_result(answer), project_id=project, lead_time=4.0)
            answered.append(answer)
        reviewer.close()
        pulled = pull_annotations(store, DATASET, admin)
    console.print(f"{reviewer.name} reviewed {len(answered)} suspects; pull: "
                  f"{ {k: v for k, v in pulled.items() if isinstance(v, int)} }")
    out = []
    for i in list_issues(store, DATASET, limit=1000):
        if i.get("outcome") is None:
            continue
        rid = i["record_id"]
        out.append({"record_id": rid, "was": i.get("label"), "suggested": i.get("suggested"),
                    "truth (CLASS)": truth.get(rid), "outcome": i.get("outcome")})
    return out


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

    run = api.request("GET", f"/runs/{r['run_id']}") if r.get("run_id") else {}
    round_s, train_s = _seconds(r), _seconds(run)
    return {"round": number, "labels": r.get("annotations_used") or 0,
            "val": acc("val"), "test": acc("test"), "test_no_leak": acc("test_leakage_free") or acc("test"),
            "pushed": r.get("tasks_pushed"), "round_s": round_s, "train_s": train_s,
            "other_s": None if round_s is None or train_s is None else round(round_s - train_s, 1),
            "reliability": (m.get("test") or {}).get("reliability")}


def _seconds(row: dict) -> float | None:
    """finished_at - started_at of a round or run row (ISO timestamps), None when either is missing."""
    from datetime import datetime

    try:
        a, b = (datetime.fromisoformat(str(row[k])) for k in ("started_at", "finished_at"))
    except (KeyError, TypeError, ValueError):
        return None
    return round((b - a).total_seconds(), 1)


def _plots(rounds: list[dict]) -> None:
    from curation.plots import plot_calibration, plot_learning_curve

    plot_learning_curve({"test": [(r["labels"], r["test"]) for r in rounds if r["test"] is not None],
                         "val": [(r["labels"], r["val"]) for r in rounds if r["val"] is not None]},
                        DOCS / "demo_learning_curve.png", title="Demo: accuracy per round (weak labels + annotations)",
                        ylabel="accuracy (%)")
    plot_calibration({f"round {r['round']}": r["reliability"] for r in rounds if r.get("reliability")},
                     DOCS / "demo_calibration.png", title="Demo: calibration on test, per round")
    for r in rounds:
        r.pop("reliability", None)
    console.print("plots: docs/lf_summary.png, docs/demo_learning_curve.png, docs/demo_calibration.png")


if __name__ == "__main__":
    raise SystemExit(main())
