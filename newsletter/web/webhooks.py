"""POST /webhooks/<provider>: provider events, verified before anything changes.

A request that cannot be verified or is stale gets a 4xx with a one-line
reason and changes nothing (the transaction is never committed). Verified
events are recorded once each and applied in the same transaction, so a
request seen before gets a 200 that counts its events as duplicates and
changes nothing, whichever the provider. Tests may pass per-provider options (the SNS fetcher) through
``app.config["WEBHOOK_OPTIONS"]``.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from newsletter.feedback import webhooks
from newsletter.feedback.events import record_events
from newsletter.store.db import session_scope

log = logging.getLogger(__name__)

blueprint = Blueprint("webhooks", __name__)


@blueprint.post("/<provider>")
def receive(provider: str):
    module = webhooks.providers().get(provider)
    if module is None:
        return _text(f"no webhook for {provider!r}", 404)
    settings = current_app.config["SETTINGS"]
    options = current_app.config.get("WEBHOOK_OPTIONS", {}).get(provider, {})
    inbound = webhooks.Inbound.of(request.get_data(cache=False), request.headers)
    try:
        with session_scope(settings) as session:
            events = module.receive(session, settings, inbound, **options)
            report = record_events(session, settings, events)
    except webhooks.Refused as refused:
        log.warning("webhook refused", extra={"provider": provider, "reason": refused.reason})
        return _text(refused.reason, refused.status)
    return jsonify(recorded=report.recorded, duplicates=report.duplicates)


def _text(body: str, status: int):
    return body + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}
