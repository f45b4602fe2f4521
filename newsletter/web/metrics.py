"""/metrics for Prometheus; with METRICS_TOKEN set, only for a bearer of it."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request
from prometheus_client.exposition import choose_encoder

from newsletter.ops.metrics import registry_for
from newsletter.web import settings_of

blueprint = Blueprint("metrics", __name__)


def _authorised(token: str) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@blueprint.get("/metrics")
def metrics() -> Response:
    settings = settings_of(current_app)
    if not _authorised(settings.metrics_token):
        return Response("a bearer token is required (METRICS_TOKEN)\n", status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'}, mimetype="text/plain")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry_for(settings)), headers={"Content-Type": content_type})
