"""Label quality: inter-annotator agreement, consensus gold labels, label-issue detection and its review list,
annotations made elsewhere. Detection (embeddings + cross-validation) and a consensus that sends tasks back to
Label Studio run as jobs."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from api import schemas as S
from api.deps import RunnerDep, StoreDep, uploaded
from api.jobs import JobContext, job_kind, plain
from curation.errors import InputError
from labeling import agreement, consensus, label_issues
from labeling.studio import sync
from training.config import default_base_model

router = APIRouter(tags=["label quality"])


class ConsensusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["majority", "dawid_skene"] = "majority"
    threshold: float = Field(consensus.DEFAULT_THRESHOLD, ge=0.0, le=1.0,
                             description="a consensus below this confidence (or a tie) is low agreement")
    send_back: bool = Field(False, description="hand ties and low-agreement tasks back to Label Studio (a job)")
    dry_run: bool = False


class LabelIssuesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: Literal["gold", "weak"] = "gold"
    method: Literal["embeddings", "lora"] = "embeddings"
    run_id: str | None = Field(None, max_length=200, description="method lora: the scored run")
    folds: int = Field(5, ge=2, le=20)
    seed: int = Field(0, ge=0, le=2 ** 31)
    dry_run: bool = False


class QualityOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset: str


@router.get("/datasets/{name}/agreement", response_model=QualityOut)
def get_agreement(name: str, store: StoreDep,
                  method: Annotated[Literal["majority", "dawid_skene"], Query()] = "majority") -> dict:
    """Krippendorff's alpha, Fleiss' kappa, pairwise Cohen's kappa (per label and overall), per annotator."""
    return plain(agreement.dataset_agreement(store, name, method=method))


@router.post("/datasets/{name}/consensus", response_model=QualityOut | S.JobOut)
def post_consensus(name: str, body: ConsensusIn, store: StoreDep, runner: RunnerDep) -> Any:
    """Recompute gold labels of multi-annotated records; with send_back, a job that also reopens ties and
    low-agreement tasks in Label Studio."""
    store.dataset(name)
    if body.send_back and not body.dry_run:
        return runner.submit("consensus", {"dataset": name, **body.model_dump()})
    return plain(consensus.apply_consensus(store, name, body.method, threshold=body.threshold,
                                           dry_run=body.dry_run))


@router.post("/datasets/{name}/label-issues", response_model=S.JobOut, status_code=202)
def post_label_issues(name: str, body: LabelIssuesIn, store: StoreDep, runner: RunnerDep) -> dict:
    """Find suspect labels (a job: embeddings + cross-validation + cleanlab); GET the list when it is done."""
    store.dataset(name)
    if body.method == "lora" and not body.run_id:
        raise InputError("method lora needs run_id (a LoRA run that scored the dataset)")
    return runner.submit("label_issues", {"dataset": name, **body.model_dump()})


@router.get("/datasets/{name}/label-issues", response_model=QualityOut)
def get_label_issues(name: str, store: StoreDep,
                     outcome: Annotated[Literal["open", "confirmed", "corrected"] | None, Query()] = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict:
    store.dataset(name)
    return plain({"dataset": name, "issues": label_issues.list_issues(store, name, outcome=outcome, limit=limit)})


@router.post("/datasets/{name}/annotations", response_model=QualityOut)
def import_annotations(name: str, store: StoreDep,
                       file: Annotated[UploadFile, File(description="long table: source_id, annotator, label")]
                       ) -> dict:
    with uploaded(file) as path:
        return plain(sync.import_annotations(store, str(path), name))


@job_kind("label_issues")
def label_issues_job(ctx: JobContext) -> dict:
    p = dict(ctx.params)
    ctx.progress(0.05, "embed + cross-validate")
    base_model = default_base_model() if p["method"] == "embeddings" else None
    return plain(label_issues.detect_label_issues(ctx.store, p["dataset"], labels=p["labels"], method=p["method"],
                                                  run_id=p.get("run_id"), folds=p["folds"], seed=p["seed"],
                                                  base_model=base_model, dry_run=p["dry_run"]))


@job_kind("consensus", heavy=False)
def consensus_job(ctx: JobContext) -> dict:
    p = ctx.params
    result = consensus.apply_consensus(ctx.store, p["dataset"], p["method"], threshold=p["threshold"])
    if result["low_record_ids"]:
        if ctx.studio is None:
            raise InputError("send_back needs Label Studio (CURATE_LS_URL and CURATE_LS_TOKEN)")
        with ctx.studio() as client:
            result["send_back"] = consensus.send_back(ctx.store, p["dataset"], result["low_record_ids"], client)
    return plain(result)
