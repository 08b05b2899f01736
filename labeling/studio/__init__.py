"""Label Studio sync: projects, pushing selections as tasks, ordering for annotators, annotations back.

Edges: `StudioClient` (HTTP, one class per remote resource) and the `Store`. The cores are pure: the label
config from a label set, task payloads from rows, ordering scores from probabilities, the label inside an
annotation result, the gold label a record's annotations imply.

    client   StudioClient and its resources (projects, tasks, predictions, annotations, webhooks, users);
             the typed errors StudioError, StudioAuthError (401/403), StudioNotFound (404), StudioUnavailable
    tasks    label config and task payloads, the dataset's project, push_selection, rerank (ordering)
    sync     webhook token and payloads, record_annotation (the upsert), handle_webhook, pull_annotations,
             register_webhook
    server   a local Label Studio in its own venv (`python -m labeling.studio.server install|start|stop|status`);
             not imported here
"""

from labeling.studio.client import (
    Annotator,
    StudioAuthError,
    StudioClient,
    StudioError,
    StudioNotFound,
    StudioUnavailable,
)
from labeling.studio.sync import (
    WEBHOOK_ACTIONS,
    WEBHOOK_HEADER,
    WebhookPayloadError,
    handle_webhook,
    mark_deleted,
    parse_ts,
    pull_annotations,
    record_annotation,
    register_webhook,
    verify_webhook_token,
)
from labeling.studio.tasks import (
    RANK_SUFFIX,
    SAMPLING,
    choice_result,
    ensure_project,
    label_config,
    ordering_scores,
    project_title,
    push_selection,
    rank_version,
    rerank,
    result_label,
    task_payload,
)
from labeling.uncertainty import UNCERTAINTY, uncertainty

__all__ = [
    "RANK_SUFFIX", "SAMPLING", "UNCERTAINTY", "WEBHOOK_ACTIONS", "WEBHOOK_HEADER",
    "Annotator", "StudioAuthError", "StudioClient", "StudioError", "StudioNotFound", "StudioUnavailable",
    "WebhookPayloadError",
    "choice_result", "ensure_project", "handle_webhook", "label_config", "mark_deleted", "ordering_scores",
    "parse_ts", "project_title", "pull_annotations", "push_selection", "rank_version", "record_annotation",
    "register_webhook", "rerank", "result_label", "task_payload", "uncertainty", "verify_webhook_token",
]
