"""Request and response bodies of the service (separate in/out models; responses never echo secrets).

Out models allow extra fields: a stage's result passes through whole, the model names the fields clients rely
on. Timestamps a route reads from the store come as ISO text (`str`).
"""

import datetime as dt
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from labeling.active.strategies import DEFAULT_STRATEGY

T = TypeVar("T")
# augmentation runs inside the request: bounded so one request stays within seconds (the API answers in ~2 s at
# most; larger jobs: `curate augment` on the machine that holds the store)
MAX_AUGMENT_PER_RECORD = 5
MAX_AUGMENT_RECORDS = 2_000
MAX_AUGMENT_OUTPUTS = 1_000   # per_record x records augmented, per request


class InModel(BaseModel):
    """Base of the request bodies: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


class OutModel(BaseModel):
    """Base of the responses: fields beyond the declared ones pass through."""

    model_config = ConfigDict(extra="allow")


# -- errors and pages ------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. `not_found`, `unauthorized`")
    message: str = Field(description="what went wrong and what to do")
    details: list[dict] | None = Field(None, description="per-field problems of a request that does not validate")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="rows matching the filters")
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


# -- health ----------------------------------------------------------------------------------------------
class HealthOut(BaseModel):
    """Liveness only (public)."""

    status: Literal["ok"] = "ok"


class StatusOut(OutModel):
    status: Literal["ok"] = "ok"
    version: str
    db: str
    schema_version: str | None
    datasets: int
    jobs_running: int
    jobs_queued: int
    auth: Literal["keys", "open"] = Field(description="open: no key configured (keyless loopback mode)")
    webhook_events: dict
    audit: dict = Field(description="audit rows written, dropped (queue full), failed")
    stages: dict[str, bool] = Field(description="which stage modules import here")


# -- keys and audit ----------------------------------------------------------------------------------------
class KeyIn(InModel):
    name: str = Field(min_length=1, max_length=100, description="who or what uses the key")
    role: Literal["annotator", "engineer", "trainer", "admin"]


class KeyOut(OutModel):
    key_id: str
    name: str
    role: str
    created_at: str | None = None
    revoked_at: str | None = None
    active: bool


class KeyCreatedOut(BaseModel):
    key_id: str
    name: str
    role: str
    key: str = Field(description="the key; shown this once, the server keeps only its sha256")


class AuditOut(OutModel):
    happened_at: str
    key_id: str | None
    key_name: str | None
    role: str | None
    method: str
    path: str
    status: int | None
    detail: str | None


# -- datasets and records ----------------------------------------------------------------------------------
class DatasetOut(OutModel):
    name: str
    task: Literal["classification", "instruction"] = "classification"
    labels: list[str]
    contract_version: str
    created_at: dt.datetime | None = None
    records: int | None = None
    settings: dict = Field(default_factory=dict)


class DatasetSettingsIn(InModel):
    round_every: int | None = Field(None, ge=0, le=2**31 - 1,
                                    description="new annotations that start a round; 0: off")
    round_size: int | None = Field(None, ge=1, le=100_000, description="tasks pushed per round")
    round_strategy: str | None = None
    round_seed: int | None = Field(None, ge=0, le=2**31 - 1)
    round_train: dict | None = Field(None, description="TrainConfig fields for round training")


class RecordOut(OutModel):
    record_id: int
    dataset: str
    source_id: str | None = None
    text: str
    label: str | None = None
    label_source: str | None = None
    group: str | None = None
    meta: Any = None
    input_hash: str
    origin: str
    parent_id: int | None = None
    split: str | None = None
    # instruction datasets (from the `instructions` view: the latest accepted revision); null for classification
    prompt: str | None = Field(None, description="instruction: everything before the last assistant turn")
    response: str | None = Field(None, description="instruction: the last assistant turn (latest accepted revision)")
    messages: list[dict] | None = Field(None, description="instruction: the conversation, [{role, content}, ...]")
    revision: int | None = Field(None, description="instruction: the revision shown (0 = as ingested)")
    turns: int | None = None
    tokens: int | None = Field(None, description="instruction: the conversation's token count at ingest")


class RevisionOut(OutModel):
    revision: int = Field(description="0 is the record as ingested")
    response: str
    messages: list[dict]
    parent_revision: int | None = None
    source: str = Field(description="ingest | annotation | import")
    annotator: str | None = None
    annotation_id: int | None = None
    status: str = Field(description="accepted | superseded (revision 0: accepted)")
    current: bool = Field(description="the revision exports and training use (the latest accepted one)")
    created_at: str | None = None


class RevisionsOut(OutModel):
    record_id: int
    dataset: str
    current: int = Field(description="the latest accepted revision")
    revisions: list[RevisionOut] = Field(description="oldest first")


class DatasetSettingsOut(OutModel):
    """The settings just written (only those the request set)."""

    round_every: int | None = None
    round_size: int | None = None
    round_strategy: str | None = None
    round_seed: int | None = None
    round_train: dict | None = None


class IngestOut(OutModel):
    """Classification and instruction ingests alike; instruction adds `task`, `layout`, `tokenizer`, `tokens` and
    `max_tokens`."""

    dataset: str
    file: str | None = Field(description="the uploaded file's name")
    format: str
    rows_read: int
    accepted: int
    quarantined: int
    duplicates: int
    labeled: int
    ingest_id: int | None
    labels: list[str]
    quarantined_by_rule: dict[str, int]
    contract_version: str


# -- SQL -----------------------------------------------------------------------------------------------------
class SqlIn(InModel):
    query: str = Field(min_length=1, max_length=100_000, examples=["SELECT label, count(*) FROM records GROUP BY 1"])
    limit: int | None = Field(None, ge=1, le=1_000_000, description="row limit (default CURATE_SQL_ROW_LIMIT)")
    timeout_s: float | None = Field(None, gt=0, le=3600)


class SqlOut(OutModel):
    columns: list[str]
    rows: list[dict]
    truncated: bool
    row_limit: int


# -- weak supervision, splits, augmentation ------------------------------------------------------------------
class LfSetOut(OutModel):
    """An applied LF file or imported votes (`status`: applied, imported, or unchanged)."""

    dataset: str | None = None
    lf_set_id: str | None = None
    status: str


class LfReportOut(OutModel):
    dataset: str
    lf_set_id: str
    lfs: list[dict] = Field(description="per LF: polarity, coverage, overlaps, conflicts, empirical accuracy")
    total: dict


class LabelModelIn(InModel):
    kind: str = Field("snorkel", description="label model kind (see `curate label-model --help`)")


class LabelModelOut(OutModel):
    dataset: str
    model_id: str
    kind: str
    lf_set_id: str | None


class SplitOut(OutModel):
    dataset: str
    counts: dict[str, int] = Field(description="records per split")
    crossing_components: int


class SplitCheckOut(OutModel):
    dataset: str
    split_id: str | None
    ok: bool = Field(description="no component crosses splits and no augmented record is outside train")
    counts: dict[str, int]
    crossing_components: int
    leaking_records: int


class AugmentOut(OutModel):
    dataset: str
    made: int
    inserted: int


class SplitIn(InModel):
    ratios: list[float] | None = Field(None, description="train/val/test ratios, e.g. [0.8, 0.1, 0.1]")
    group_by: str | None = Field(None, description="`group` keeps a group's records in one split")
    near_dup_threshold: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    from_column: str | None = Field(None, description="take given splits from this meta column")
    template_aware: bool | None = Field(None, description="drop shared template n-grams and join a passage "
                                        "contained in a longer text before comparing; default: on for instruction "
                                        "datasets (split on the prompt), off for classification")


# -- contamination --------------------------------------------------------------------------------------------
class ContaminationCheckOut(OutModel):
    """A stored contamination check (the newest of a dataset unless a check_id is asked for)."""

    check_id: str
    dataset: str
    against: str = Field(description="the evaluation file checked against")
    ngram: int
    checked: int = Field(description="records checked")
    contaminated: int = Field(description="records flagged")
    params: Any = None
    created_at: str | None = None


class ContaminationFlagOut(OutModel):
    record_id: int
    source_id: str | None = None
    overlap: float = Field(description="share of the record's tokens covered by n-grams shared with the eval set")
    field: str | None = Field(None, description="the fields that matched (prompt, response or text)")
    matched: str | None = Field(None, description="an example of the shared n-gram (normalised tokens)")


class ContaminationPage(Page[ContaminationFlagOut]):
    check: ContaminationCheckOut | None = Field(description="the check these flags belong to; null: none run")


class AugmentIn(InModel):
    per_record: int = Field(1, ge=1, le=MAX_AUGMENT_PER_RECORD, description="copies per train record")
    augmenters: list[str] = Field(["keyboard", "word_swap"], min_length=1, max_length=8,
                                  description="names from curation.augment.AUGMENTERS")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    limit: int | None = Field(None, ge=1, le=MAX_AUGMENT_RECORDS,
                              description=f"augment at most this many records (at most {MAX_AUGMENT_RECORDS})")


# -- runs, predictions, selections, rounds, jobs ---------------------------------------------------------------
class TrainIn(InModel):
    dataset: str
    config: dict = Field(default_factory=dict, description="TrainConfig fields (epochs, lr, lora_r, ...)")


class ScoreIn(InModel):
    dataset: str | None = None
    include_labeled: bool = False


class RunOut(OutModel):
    """A training run (one row of `runs`; `GET /runs/{id}` adds config, data_counts, history, adapter_path)."""

    run_id: str
    dataset: str
    snapshot_id: str | None = None
    status: str
    metrics: Any = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class ResponseScoreOut(OutModel):
    """SFT runs: the mean token negative log-likelihood of a record's response (fine-tuned and base model)."""

    record_id: int
    prompt: str | None = None
    response: str | None = None
    loss: float
    base_loss: float | None = None
    tokens: int | None = None
    scored_at: str | None = None


class PredictionOut(OutModel):
    record_id: int
    text: str
    label: str | None
    probs: list[float]
    confidence: float | None
    least_confidence: float | None
    margin: float | None
    entropy: float | None
    scored_at: str | None


class SelectIn(InModel):
    run_id: str
    strategy: str = DEFAULT_STRATEGY
    n: int = Field(50, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    round: int | None = Field(None, ge=0, le=2**31 - 1)


class SelectionOut(OutModel):
    """A new selection: the chosen records, most informative first, with their scores."""

    selection_id: str
    dataset: str
    round: int | None
    run_id: str
    strategy: str
    n: int
    record_ids: list[int]
    scores: list[float]


class SelectionSummaryOut(OutModel):
    selection_id: str
    dataset: str
    round: int | None
    run_id: str | None
    strategy: str
    n: int
    created_at: str | None


class SelectedRecordOut(OutModel):
    record_id: int
    rank: int
    score: float | None
    strategy: str
    round: int | None
    run_id: str | None
    text: str


class RoundIn(InModel):
    trigger: str = Field("request", max_length=100)


class JobOut(OutModel):
    job_id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: float | None = None
    message: str | None = None
    params: dict | None = None
    result: Any = None
    error: str | None = None
    retry_of: str | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class RoundOut(OutModel):
    round_id: str
    dataset: str
    number: int
    status: str
    trigger: str | None = None
    annotations_used: int | None = None
    snapshot_id: str | None = None
    run_id: str | None = None
    metrics: Any = None
    selection_id: str | None = None
    tasks_pushed: int | None = None
    job_id: str | None = None
    error: str | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class RoundRequestOut(OutModel):
    created: bool = Field(description="false: a round of this dataset was already queued or running")
    round: RoundOut
    job_id: str | None


class WebhookAck(OutModel):
    accepted: bool = True
    queued: int = Field(description="events waiting to be stored")


# -- Label Studio ML backend -------------------------------------------------------------------------------------
class MlHealthOut(BaseModel):
    status: Literal["UP"] = "UP"
    model_class: str
    v2: bool


class MlSetupIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str | None = None
    schema_: str | None = Field(None, alias="schema")


class MlSetupOut(BaseModel):
    model_version: str = Field(description="the run that predicts (or `curate-untrained`)")


class MlVersionsOut(BaseModel):
    versions: list[str] = Field(description="succeeded run ids, newest first")


class MlPredictIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[dict]
    label_config: str | None = None
    project: str | None = None
    params: dict | None = None


class MlPrediction(BaseModel):
    result: list[dict]
    score: float | None = None
    model_version: str


class MlPredictOut(BaseModel):
    results: list[MlPrediction]
    model_version: str | None = None


class MlWebhookOut(OutModel):
    """START_TRAINING: the round it queued (or the one already queued); other events: how many wait to be stored."""

    status: Literal["ok"] = "ok"
    action: Any = None
    queued: int | None = None
    created: bool | None = None
    job_id: str | None = None
    round_id: str | None = None


class MlTrainOut(OutModel):
    status: Literal["ok"] = "ok"
    job: str | None = Field(description="the round's job id")
    round_id: str
