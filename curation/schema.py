"""The store's schema: tables (internal, schema `store`) and the stable views SQL users query (schema `main`).

Every stage writes its own tables here and reads records by id; nothing reshapes `records`. Each row that
carries a label says where it came from (imported file, LF set, label model, annotator, run).
Bump SCHEMA_VERSION when a table changes and add the step to `curation.migrations` (a fresh store and a migrated
one must end up with the same tables and columns; tests/test_migrations.py checks it).
"""

SCHEMA_VERSION = 2

TABLES = """
CREATE SCHEMA IF NOT EXISTS store;

CREATE TABLE IF NOT EXISTS store.meta (key TEXT PRIMARY KEY, value TEXT);

CREATE TABLE IF NOT EXISTS store.datasets (
    name TEXT PRIMARY KEY,
    labels TEXT[] NOT NULL,            -- the declared label set; class index = position
    contract_version TEXT NOT NULL,
    settings JSON,                     -- per-dataset settings (e.g. round_every)
    created_at TIMESTAMP NOT NULL,
    task TEXT NOT NULL DEFAULT 'classification'   -- 'classification' | 'instruction'
);

CREATE TABLE IF NOT EXISTS store.ingests (
    ingest_id BIGINT PRIMARY KEY,
    dataset TEXT NOT NULL,
    file TEXT NOT NULL,
    format TEXT NOT NULL,
    rows_read BIGINT, accepted BIGINT, quarantined BIGINT, duplicates BIGINT,
    contract_version TEXT,
    started_at TIMESTAMP, finished_at TIMESTAMP
);

-- no PRIMARY KEY: ids are allocated under the write lock, and an index would double bulk-insert time
CREATE TABLE IF NOT EXISTS store.records (
    record_id BIGINT NOT NULL,
    dataset TEXT NOT NULL,
    source_id TEXT,                    -- the id the source gave it, if any
    text TEXT NOT NULL,
    "group" TEXT,                      -- author / document / conversation: ties records for splits
    meta JSON,                         -- the source's other columns
    input_hash TEXT NOT NULL,          -- curation.normalize.input_hash(text)
    origin TEXT NOT NULL,              -- 'ingest' | 'augment'
    parent_id BIGINT,                  -- augmented rows: the record they were made from
    ingest_id BIGINT,
    source_row BIGINT,                 -- 1-based data row in the ingested file
    ingested_at TIMESTAMP NOT NULL,
    messages JSON,                     -- instruction records: the conversation [{role, content}]; text = its prompt
    response TEXT,                     -- instruction records: the last assistant turn as ingested
    tokens INTEGER                     -- instruction records: tokens of the conversation (base model's tokenizer)
);

-- the current gold label of a record and its provenance ('imported' | 'annotation')
CREATE TABLE IF NOT EXISTS store.gold_labels (
    record_id BIGINT PRIMARY KEY,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    source_ref TEXT,                   -- file, or Label Studio annotation id
    annotator TEXT,
    updated_at TIMESTAMP NOT NULL,
    method TEXT,                       -- how several annotations became this label ('latest', 'majority', ...)
    confidence DOUBLE                  -- that method's confidence in it
);

CREATE TABLE IF NOT EXISTS store.quarantine (
    ingest_id BIGINT,
    dataset TEXT NOT NULL,
    file TEXT NOT NULL,
    "row" BIGINT,                      -- 1-based data row (header excluded)
    field TEXT,
    rule TEXT NOT NULL,
    message TEXT NOT NULL,
    raw TEXT,                          -- the row as read, JSON or raw line
    quarantined_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS store.versions (
    version_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    kind TEXT NOT NULL,                -- 'snapshot' | 'export'
    path TEXT NOT NULL,
    "rows" BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    contract_version TEXT NOT NULL,
    manifest JSON NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- weak supervision -------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS store.lf_sets (
    lf_set_id TEXT PRIMARY KEY,        -- '<dataset>/<version>'; version 'lfs:<hash of definitions>' or 'import:<hash>'
    dataset TEXT NOT NULL,
    source TEXT,                       -- the LF file or the imported votes file
    created_at TIMESTAMP NOT NULL,
    version TEXT,                      -- hash of the LF definitions (or of the imported file + mapping)
    kind TEXT,                         -- 'lfs' | 'import'
    n_records BIGINT, max_record_id BIGINT,   -- the records the votes cover (re-apply is a no-op while unchanged)
    result JSON,                       -- the apply/import result (fired, faults, engines, timings)
    applied_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS store.lfs (
    lf_set_id TEXT NOT NULL, lf_index INTEGER NOT NULL,
    name TEXT NOT NULL, kind TEXT NOT NULL, label TEXT, definition TEXT,
    engine TEXT,                       -- 'sql' | 'python' | 'import'
    declared_at TEXT,                  -- provenance: 'file:line' of the declaration, or the imported file/column
    fired BIGINT, faults BIGINT,       -- records it voted on; exceptions counted in fault-tolerant mode
    PRIMARY KEY (lf_set_id, lf_index)
);
-- sparse: abstains are not stored
CREATE TABLE IF NOT EXISTS store.votes (
    lf_set_id TEXT NOT NULL, record_id BIGINT NOT NULL, lf_index INTEGER NOT NULL, vote SMALLINT NOT NULL
);
CREATE TABLE IF NOT EXISTS store.label_models (
    model_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, lf_set_id TEXT NOT NULL, kind TEXT NOT NULL,
    params JSON, metrics JSON, created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS store.weak_labels (
    model_id TEXT NOT NULL, record_id BIGINT NOT NULL,
    probs DOUBLE[] NOT NULL, label TEXT, confidence DOUBLE,
    PRIMARY KEY (model_id, record_id)
);

-- splits and augmentation ------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS store.split_sets (
    split_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, method TEXT NOT NULL,   -- 'computed' | 'column'
    params JSON, report JSON, is_current BOOLEAN NOT NULL, created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS store.splits (
    split_id TEXT NOT NULL, record_id BIGINT NOT NULL, split TEXT NOT NULL,
    component BIGINT NOT NULL, reason TEXT,
    leaks BOOLEAN NOT NULL DEFAULT false,   -- its component crosses splits (given splits, or allowed leakage)
    PRIMARY KEY (split_id, record_id)
);
CREATE TABLE IF NOT EXISTS store.augmentations (
    record_id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL, augmenter TEXT NOT NULL,
    params JSON, seed BIGINT, created_at TIMESTAMP NOT NULL
);

-- training, scoring, selection ------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS store.runs (
    run_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, snapshot_id TEXT, status TEXT NOT NULL,
    config JSON, data_counts JSON, history JSON, metrics JSON, adapter_path TEXT, error TEXT,
    leakage_allowed BOOLEAN, started_at TIMESTAMP, finished_at TIMESTAMP,
    task TEXT NOT NULL DEFAULT 'classification',   -- 'classification' | 'sft'
    contamination_allowed BOOLEAN
);
CREATE TABLE IF NOT EXISTS store.predictions (
    run_id TEXT NOT NULL, record_id BIGINT NOT NULL,
    probs DOUBLE[] NOT NULL, label TEXT NOT NULL, confidence DOUBLE,
    least_confidence DOUBLE, margin DOUBLE, entropy DOUBLE, embedding FLOAT[],
    scored_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, record_id)
);
CREATE TABLE IF NOT EXISTS store.selections (
    selection_id TEXT NOT NULL, dataset TEXT NOT NULL, round INTEGER, run_id TEXT,
    record_id BIGINT NOT NULL, strategy TEXT NOT NULL, score DOUBLE, rank INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    details JSON,                      -- e.g. what `--strategy auto` chose and why
    PRIMARY KEY (selection_id, record_id)
);

-- Label Studio loop and jobs --------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS store.ls_projects (
    dataset TEXT PRIMARY KEY, project_id BIGINT NOT NULL, url TEXT, label_config TEXT, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS store.ls_tasks (
    project_id BIGINT NOT NULL, input_hash TEXT NOT NULL, task_id BIGINT NOT NULL, record_id BIGINT NOT NULL,
    selection_id TEXT, pushed_at TIMESTAMP NOT NULL,
    rank_version TEXT,                 -- the model_version of the ordering prediction this task carries
    rank_score DOUBLE,                 -- its score (1 - uncertainty): Label Studio serves the lowest first
    prior_label TEXT,                  -- the imported gold label at push time, restored if annotations go
    prior_source_ref TEXT,
    PRIMARY KEY (project_id, input_hash)
);
CREATE TABLE IF NOT EXISTS store.annotations (
    annotation_id BIGINT PRIMARY KEY,  -- Label Studio's id
    project_id BIGINT, task_id BIGINT, record_id BIGINT, label TEXT, annotator TEXT,
    created_at TIMESTAMP, updated_at TIMESTAMP, lead_time DOUBLE, was_cancelled BOOLEAN,
    deleted BOOLEAN NOT NULL DEFAULT false, result JSON, via TEXT, received_at TIMESTAMP NOT NULL,
    rating INTEGER,                    -- instruction review: the 1-5 rating
    response TEXT                      -- instruction review: the response as the annotator left it
);
CREATE TABLE IF NOT EXISTS store.rounds (
    round_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, number INTEGER NOT NULL, status TEXT NOT NULL,
    trigger TEXT, annotations_used BIGINT, run_id TEXT, metrics JSON, tasks_pushed BIGINT, job_id TEXT,
    started_at TIMESTAMP, finished_at TIMESTAMP,
    snapshot_id TEXT, selection_id TEXT, error TEXT, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS store.jobs (
    job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, progress DOUBLE,
    params JSON, result JSON, error TEXT,
    created_at TIMESTAMP NOT NULL, started_at TIMESTAMP, finished_at TIMESTAMP,
    message TEXT,                      -- the current step ("step 2/5: train")
    retry_of TEXT                      -- the failed job this one runs again
);
-- instruction data (schema 2) ---------------------------------------------------------------------------
-- an edited response is a new revision; exports and training use the latest accepted one
CREATE TABLE IF NOT EXISTS store.revisions (
    record_id BIGINT NOT NULL, revision INTEGER NOT NULL,   -- revision 0 is the record as ingested
    response TEXT NOT NULL, messages JSON NOT NULL,
    parent_revision INTEGER, source TEXT NOT NULL,          -- 'annotation' | 'import'
    annotator TEXT, annotation_id BIGINT, status TEXT NOT NULL,   -- 'accepted' | 'superseded'
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (record_id, revision)
);
CREATE TABLE IF NOT EXISTS store.response_scores (   -- SFT runs: mean token NLL of the response
    run_id TEXT NOT NULL, record_id BIGINT NOT NULL, loss DOUBLE NOT NULL, base_loss DOUBLE,
    tokens INTEGER, embedding FLOAT[], scored_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, record_id)
);
CREATE TABLE IF NOT EXISTS store.contamination_checks (
    check_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, against TEXT NOT NULL, ngram INTEGER NOT NULL,
    checked BIGINT NOT NULL, contaminated BIGINT NOT NULL, params JSON, created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS store.contamination (
    check_id TEXT NOT NULL, record_id BIGINT NOT NULL, overlap DOUBLE NOT NULL,   -- share of tokens covered
    field TEXT, matched TEXT,          -- which field matched, and an example of the shared n-gram
    PRIMARY KEY (check_id, record_id)
);

-- label quality (schema 2) -----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS store.label_issues (
    dataset TEXT NOT NULL, record_id BIGINT NOT NULL, label TEXT NOT NULL, label_source TEXT,
    suggested TEXT, score DOUBLE, method TEXT, found_at TIMESTAMP NOT NULL,
    outcome TEXT,                      -- after review: 'confirmed' | 'corrected'
    reviewed_at TIMESTAMP,
    PRIMARY KEY (dataset, record_id)
);

-- service access (schema 2) ----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS store.api_keys (
    key_id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
    key_hash TEXT NOT NULL,            -- sha256 of the key; the key itself is never stored
    created_at TIMESTAMP NOT NULL, revoked_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS store.audit (
    happened_at TIMESTAMP NOT NULL, key_id TEXT, key_name TEXT, role TEXT,
    method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER, detail TEXT
);
"""

# The stable views SQL users see. Internal columns may change; these names do not.
VIEWS = {
    "datasets": "SELECT d.name, d.task, d.labels, d.contract_version, d.created_at, "
    "(SELECT count(*) FROM store.records r WHERE r.dataset = d.name) AS records FROM store.datasets d",
    "records": "SELECT r.record_id, r.dataset, r.source_id, r.text, g.label, g.source AS label_source, r.\"group\", "
    "r.meta, r.input_hash, r.origin, r.parent_id, r.ingest_id, r.source_row, r.ingested_at "
    "FROM store.records r LEFT JOIN store.gold_labels g USING (record_id)",
    "gold_labels": "SELECT * FROM store.gold_labels",
    "quarantine": "SELECT * FROM store.quarantine",
    "ingests": "SELECT * FROM store.ingests",
    "versions": "SELECT * FROM store.versions",
    "lfs": "SELECT * FROM store.lfs",
    "votes": "SELECT v.lf_set_id, v.record_id, r.dataset, l.name AS lf, v.lf_index, v.vote, "
    "d.labels[v.vote + 1] AS label FROM store.votes v JOIN store.records r USING (record_id) "
    "JOIN store.datasets d ON d.name = r.dataset JOIN store.lfs l USING (lf_set_id, lf_index)",
    "label_models": "SELECT * FROM store.label_models",
    "weak_labels": "SELECT w.*, m.dataset, m.kind AS model_kind, m.lf_set_id FROM store.weak_labels w "
    "JOIN store.label_models m USING (model_id)",
    "splits": "SELECT s.*, ss.dataset, ss.is_current FROM store.splits s JOIN store.split_sets ss USING (split_id)",
    "augmentations": "SELECT * FROM store.augmentations",
    "runs": "SELECT * FROM store.runs",
    "predictions": "SELECT * EXCLUDE (embedding) FROM store.predictions",
    "selections": "SELECT * FROM store.selections",
    "ls_tasks": "SELECT * FROM store.ls_tasks",
    "annotations": "SELECT * FROM store.annotations",
    "rounds": "SELECT * FROM store.rounds",
    "jobs": "SELECT * FROM store.jobs",
    # instruction datasets: the latest accepted revision of each conversation
    "instructions": "SELECT r.record_id, r.dataset, r.source_id, r.text AS prompt, "
    "coalesce(v.response, r.response) AS response, coalesce(v.messages, r.messages) AS messages, "
    "coalesce(v.revision, 0) AS revision, json_array_length(coalesce(v.messages, r.messages)) AS turns, "
    "r.tokens, g.label, g.source AS label_source, r.\"group\", r.meta, r.input_hash, r.origin, r.parent_id, "
    "r.ingested_at FROM store.records r JOIN store.datasets d ON d.name = r.dataset AND d.task = 'instruction' "
    "LEFT JOIN store.gold_labels g USING (record_id) "
    "LEFT JOIN (SELECT record_id, max(revision) AS revision, arg_max(response, revision) AS response, "
    "arg_max(messages, revision) AS messages FROM store.revisions WHERE status = 'accepted' GROUP BY record_id) v "
    "USING (record_id)",
    "revisions": "SELECT * FROM store.revisions",
    "response_scores": "SELECT * EXCLUDE (embedding) FROM store.response_scores",
    "contamination": "SELECT c.*, k.dataset, k.against, k.ngram FROM store.contamination c "
    "JOIN store.contamination_checks k USING (check_id)",
    "contamination_checks": "SELECT * FROM store.contamination_checks",
    "label_issues": "SELECT * FROM store.label_issues",
}


def ddl() -> list[str]:
    views = [f"CREATE OR REPLACE VIEW main.{name} AS {sql}" for name, sql in VIEWS.items()]
    return [TABLES, *views]
