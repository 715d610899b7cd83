"""`POST /api/v1/webhooks/livekit`: LiveKit's room and participant events.

A plain Django view: LiveKit sends `application/webhook+json`, and the signature
covers the raw body, so it is verified on the exact bytes before anything is parsed.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from calls.services import livekit_webhook_receive
from voicecalls.errors import error_json
from voicecalls.livekit import WebhookSignatureError


@csrf_exempt
def livekit_webhook(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        response = error_json(405, "client_error", "method_not_allowed", "Use POST.")
        response["Allow"] = "POST"
        return response
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return error_json(400, "client_error", "parse_error", "The body is not UTF-8.")
    try:
        result = livekit_webhook_receive(
            body=body, authorization=request.headers.get("Authorization", "")
        )
    except WebhookSignatureError:
        return error_json(
            401, "client_error", "authentication_failed", "Invalid or missing webhook signature."
        )
    return JsonResponse({"result": result})
