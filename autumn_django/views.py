"""The webhook endpoint Autumn delivers to (include ``autumn_django.urls``).

It only verifies and stores: a delivery is answered 200 as soon as it is
stored, before any processing, so Svix never times out waiting on Autumn
being called back; a repeated delivery is a 200 that does nothing. A
delivery that is not Autumn's is a 400 with a short reason, and nothing
is stored.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import tasks, webhooks


@csrf_exempt  # signed by Autumn instead: the signature is the authentication
@require_POST
def webhook(request: HttpRequest) -> HttpResponse:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdecimal() or int(length) > webhooks.MAX_BODY:
        return JsonResponse({"error": "body too large"}, status=413)
    try:
        received = webhooks.receive(request.body, dict(request.headers))
    except webhooks.Refused as refused:
        return JsonResponse({"error": str(refused)}, status=400)
    if received.to_process:
        tasks.enqueue_webhook_after_commit(received.event)
    return JsonResponse({"received": True, "duplicate": not received.created})
