"""Label Studio sync: projects, pushing selections as tasks, ordering for annotators, annotations back.

Edges: `StudioClient` (HTTP, one class per remote resource) and the `Store`. The cores are pure: the label
config from a label set, task payloads from rows, ordering scores from probabilities, the label inside an
annotation result, the gold label a record's annotations imply.

    client   StudioClient and its resources (projects, tasks, predictions, annotations, webhooks, users);
             the typed errors StudioError, StudioAuthError (401/403), StudioNotFound (404), StudioUnavailable
    tasks    label config and task payloads, the dataset's project, push_selection, rerank (ordering); for
             instruction datasets the review config, review tasks and review_outcome (accept/reject/edit)
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
    VERDICTS,
    ReviewOutcome,
    choice_result,
    dataset_task,
    dialogue_turns,
    ensure_project,
    label_config,
    loss_scores,
    ordering_scores,
    project_config,
    project_title,
    push_selection,
    rank_version,
    replace_response,
    rerank,
    result_label,
    review_config,
    review_outcome,
    review_result,
    review_task,
    task_payload,
)
from labeling.uncertainty import UNCERTAINTY, uncertainty

__all__ = [
    "RANK_SUFFIX",
    "SAMPLING",
    "UNCERTAINTY",
    "VERDICTS",
    "WEBHOOK_ACTIONS",
    "WEBHOOK_HEADER",
    "Annotator",
    "ReviewOutcome",
    "StudioAuthError",
    "StudioClient",
    "StudioError",
    "StudioNotFound",
    "StudioUnavailable",
    "WebhookPayloadError",
    "choice_result",
    "dataset_task",
    "dialogue_turns",
    "ensure_project",
    "handle_webhook",
    "label_config",
    "loss_scores",
    "mark_deleted",
    "ordering_scores",
    "parse_ts",
    "project_config",
    "project_title",
    "pull_annotations",
    "push_selection",
    "rank_version",
    "record_annotation",
    "register_webhook",
    "replace_response",
    "rerank",
    "result_label",
    "review_config",
    "review_outcome",
    "review_result",
    "review_task",
    "task_payload",
    "uncertainty",
    "verify_webhook_token",
]
