"""Training runs (start one as a job, score with one as a job), their predictions, and active-learning
selections over them."""

from typing import Annotated

from fastapi import APIRouter, Query

from api import schemas as S
from api.deps import Limit, Offset, RunnerDep, StoreDep, frame_rows, json_cols, page
from api.jobs import plain
from api.rounds import check_train_config
from curation.errors import NotFound
from curation.store import Store, equals_where
from labeling import active

router = APIRouter()


def _check_run(store: Store, run_id: str) -> None:
    if not store.one("SELECT count(*) FROM store.runs WHERE run_id = ?", [run_id]):
        raise NotFound(f"no run {run_id!r}; list runs with GET /runs")


@router.get("/runs", response_model=S.Page[S.RunOut], tags=["runs"])
def list_runs(store: StoreDep, dataset: str | None = None, status: str | None = None, limit: Limit = 50,
              offset: Offset = 0) -> dict:
    clause, args = equals_where(dataset=dataset or None, status=status or None)
    total = store.one(f"SELECT count(*) FROM main.runs {clause}", args)
    rows = store.frame(f"SELECT run_id, dataset, snapshot_id, status, metrics, error, started_at, finished_at "
                       f"FROM main.runs {clause} ORDER BY started_at DESC NULLS LAST, run_id "
                       f"LIMIT ? OFFSET ?", [*args, limit, offset])
    return page([json_cols(x, "metrics") for x in frame_rows(rows)], total, limit, offset)


@router.get("/runs/{run_id}", response_model=S.RunOut, tags=["runs"])
def get_run(run_id: str, store: StoreDep) -> dict:
    rows = frame_rows(store.frame("SELECT * FROM main.runs WHERE run_id = ?", [run_id]))
    if not rows:
        raise NotFound(f"no run {run_id!r}; list runs with GET /runs")
    return json_cols(rows[0], "config", "data_counts", "history", "metrics")


@router.post("/runs", response_model=S.JobOut, status_code=202, tags=["runs"])
def start_training(body: S.TrainIn, store: StoreDep, runner: RunnerDep) -> dict:
    from training.sft_runs import is_sft

    check_train_config(body.config, is_sft(store, body.dataset))   # an instruction dataset: SFT options
    return runner.submit("train", body.model_dump())


@router.post("/runs/{run_id}/score", response_model=S.JobOut, status_code=202, tags=["runs"])
def start_scoring(run_id: str, body: S.ScoreIn, store: StoreDep, runner: RunnerDep) -> dict:
    _check_run(store, run_id)
    return runner.submit("score", {"run_id": run_id, **body.model_dump()})


@router.get("/runs/{run_id}/predictions", response_model=S.Page[S.PredictionOut], tags=["runs"])
def predictions(run_id: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0, label: str | None = None,
                order: Annotated[str, Query(pattern="^(record_id|uncertain|confident)$")] = "record_id") -> dict:
    _check_run(store, run_id)
    where, args = ["p.run_id = ?"], [run_id]
    if label is not None:
        where.append("p.label = ?")
        args.append(label)
    order_by = {"record_id": "p.record_id", "uncertain": "p.confidence ASC, p.record_id",
                "confident": "p.confidence DESC, p.record_id"}[order]
    clause = " AND ".join(where)
    total = store.one(f"SELECT count(*) FROM main.predictions p WHERE {clause}", args)
    rows = store.frame(f"SELECT p.record_id, r.text, p.label, p.probs, p.confidence, p.least_confidence, "
                       f"p.margin, p.entropy, p.scored_at FROM main.predictions p JOIN store.records r "
                       f"USING (record_id) WHERE {clause} ORDER BY {order_by} LIMIT ? OFFSET ?",
                       [*args, limit, offset])
    return page(frame_rows(rows), total, limit, offset)


@router.get("/runs/{run_id}/scores", response_model=S.Page[S.ResponseScoreOut], tags=["runs"])
def response_scores(run_id: str, store: StoreDep, limit: Limit = 50, offset: Offset = 0,
                    order: Annotated[str, Query(pattern="^(record_id|highest_loss|lowest_loss)$")] = "record_id"
                    ) -> dict:
    """SFT runs: each scored record's response loss (mean token NLL under the fine-tuned model) beside the base
    model's, written by POST /runs/{run_id}/score. Select the worst for review with POST /selections (strategy
    highest_loss or cluster_loss)."""
    _check_run(store, run_id)
    order_by = {"record_id": "s.record_id", "highest_loss": "s.loss DESC, s.record_id",
                "lowest_loss": "s.loss ASC, s.record_id"}[order]
    total = store.one("SELECT count(*) FROM store.response_scores WHERE run_id = ?", [run_id])
    rows = store.frame(f"SELECT s.record_id, i.prompt, i.response, s.loss, s.base_loss, s.tokens, s.scored_at "
                       f"FROM store.response_scores s LEFT JOIN main.instructions i USING (record_id) "
                       f"WHERE s.run_id = ? ORDER BY {order_by} LIMIT ? OFFSET ?", [run_id, limit, offset])
    return page(frame_rows(rows), total, limit, offset)


@router.post("/selections", response_model=S.SelectionOut, status_code=201,
             tags=["selections"])
def select(body: S.SelectIn, store: StoreDep) -> dict:
    return plain(active.select(store, body.run_id, body.strategy, body.n, seed=body.seed, round=body.round))


@router.get("/selections", response_model=S.Page[S.SelectionSummaryOut], tags=["selections"])
def list_selections(store: StoreDep, dataset: str | None = None, limit: Limit = 50, offset: Offset = 0) -> dict:
    clause, args = ("WHERE dataset = ?", [dataset]) if dataset else ("", [])
    total = store.one(f"SELECT count(DISTINCT selection_id) FROM main.selections {clause}", args)
    rows = store.frame(f"SELECT selection_id, any_value(dataset) AS dataset, any_value(round) AS round, "
                       f"any_value(run_id) AS run_id, any_value(strategy) AS strategy, count(*) AS n, "
                       f"min(created_at) AS created_at FROM main.selections {clause} GROUP BY selection_id "
                       f"ORDER BY created_at DESC, selection_id LIMIT ? OFFSET ?", [*args, limit, offset])
    return page(frame_rows(rows), total, limit, offset)


@router.get("/selections/{selection_id}", response_model=S.Page[S.SelectedRecordOut], tags=["selections"])
def get_selection(selection_id: str, store: StoreDep, limit: Limit = 100, offset: Offset = 0) -> dict:
    total = store.one("SELECT count(*) FROM main.selections WHERE selection_id = ?", [selection_id])
    if not total:
        raise NotFound(f"no selection {selection_id!r}; list them with GET /selections")
    rows = store.frame("SELECT s.record_id, s.rank, s.score, s.strategy, s.round, s.run_id, r.text "
                       "FROM main.selections s JOIN store.records r USING (record_id) WHERE s.selection_id = ? "
                       "ORDER BY s.rank LIMIT ? OFFSET ?", [selection_id, limit, offset])
    return page(frame_rows(rows), total, limit, offset)
