"""`POST /webhooks/labelstudio`: Label Studio's events, queued for the recorder thread and answered at once."""

from fastapi import APIRouter, Request

from api import schemas as S
from api.deps import StateDep, json_body, queue_event

router = APIRouter(tags=["label studio"])


@router.post("/webhooks/labelstudio", response_model=S.WebhookAck,
             responses={503: {"description": "the event queue is full; retry after Retry-After seconds (the "
                                             "round's pull from Label Studio also recovers the event)"}})
async def ls_webhook(request: Request, state: StateDep) -> dict:
    """Queue the event and answer at once (on the event loop: no thread, no store access, so SQL and jobs cannot
    delay it); a recorder thread stores it and checks the round trigger."""
    return {"accepted": True, "queued": queue_event(state, await json_body(request))}
