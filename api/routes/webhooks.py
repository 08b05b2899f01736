"""`POST /webhooks/labelstudio`: Label Studio's events, queued for the recorder thread and answered at once."""

from fastapi import APIRouter, Request

from api import schemas as S
from api.deps import StateDep, WebhookAuth, json_body

router = APIRouter(tags=["label studio"])


@router.post("/webhooks/labelstudio", dependencies=WebhookAuth, response_model=S.WebhookAck)
async def ls_webhook(request: Request, state: StateDep) -> dict:
    """Queue the event and answer at once; a recorder thread stores it and checks the round trigger."""
    return {"accepted": True, "queued": state.recorder.put(await json_body(request))}
