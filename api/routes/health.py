"""`GET /health`: liveness only (public: no versions, paths, URLs or stage list). `GET /status`: the store, the
jobs, auth mode and webhook event counts (readers only)."""

from fastapi import APIRouter

from api import schemas as S
from api.deps import StateDep

VERSION = "0.1.0"

# the stages the routes and jobs call; they are imported when the app is, so a running server has them all
STAGES = ("ingest", "run_sql", "snapshot", "apply_lfs", "import_votes", "fit_label_model", "lf_report", "make_split",
          "check_split", "augment", "train", "score", "load_model", "select", "push_selection", "pull_annotations",
          "handle_webhook", "studio_client")

router = APIRouter(tags=["service"])


@router.get("/health", response_model=S.HealthOut)
async def health() -> dict:
    """Liveness: answers on the event loop without touching the store."""
    return {"status": "ok"}


@router.get("/status", response_model=S.StatusOut)
def status(state: StateDep) -> dict:
    store = state.store
    counts = dict(store.query("SELECT status, count(*) FROM store.jobs WHERE status IN ('queued', 'running') "
                              "GROUP BY status"))
    stats = state.recorder.stats
    return {"status": "ok", "version": VERSION, "db": str(store.path),
            "schema_version": store.one("SELECT value FROM store.meta WHERE key = 'schema_version'"),
            "datasets": store.one("SELECT count(*) FROM store.datasets"),
            "jobs_running": counts.get("running", 0), "jobs_queued": counts.get("queued", 0),
            "auth": "keys" if state.keyring.keyed else "open",
            "webhook_events": {"received": stats.received, "recorded": stats.recorded, "failed": stats.failed,
                               "refused": stats.refused, "rounds_started": stats.rounds_started,
                               "last_error": stats.last_error},
            "audit": {"written": state.audit.written, "dropped": state.audit.dropped, "failed": state.audit.failed},
            "stages": dict.fromkeys(STAGES, True)}
