"""/healthz (the web app can reach its database) and /healthz/workers."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from newsletter.ops.health import database_reachable, worker_health
from newsletter.web import settings_of

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    result = database_reachable(settings_of(current_app))
    return jsonify(ok=result.ok, message=result.message), 200 if result.ok else 503


@blueprint.get("/healthz/workers")
def workers():
    """A running worker for every queue: for a load balancer or an uptime check."""
    result = worker_health(settings_of(current_app))
    return jsonify(ok=result.ok, message=result.message), 200 if result.ok else 503
