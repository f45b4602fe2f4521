"""The ops dashboard's world, shared by its tests (tests/web/test_ops.py, the
browser's tests/web/test_browser_ops.py, tests/accounts/test_accounts.py): an
operator's account and login, and a send under way with batches delivered by
hand, as workers would."""

from __future__ import annotations

import re

from sqlalchemy import select

from newsletter.ops.broker import QueueStats
from newsletter.sending import scheduling
from newsletter.sending.delivery import Deliverer
from newsletter.sending.lifecycle import claim_due_sends
from newsletter.store.db import session_scope
from newsletter.store.models import Batch, Send

PASSWORD = "correct horse battery staple"
OPERATOR = "ops@example.org"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def address(n: int) -> str:
    return f"reader{n:03d}@example.com"


def start_send(settings, rendered, subscribers: int, batch_size: int = 10) -> int:
    """A send that is sending, its audience frozen and cut into batches, nothing sent yet."""
    from newsletter.store.issues import store_issue
    from newsletter.audience.subscribers import add_subscriber, create_list

    slug = rendered.issue.publication.slug
    with session_scope(settings) as session:
        issue = store_issue(session, rendered)
        mailing_list = create_list(session, slug, "everyone", "Everyone")
        for n in range(subscribers):
            add_subscriber(session, address(n), lists=["everyone"], publication_slug=slug)
        send = scheduling.schedule_send(session, issue, mailing_list, None, batch_size=batch_size)
        session.commit()
        claim_due_sends(session, settings)
        return send.id


def deliver_batches(settings, transport, send_id: int, count: int | None = None) -> list:
    """Deliver the send's first ``count`` batches (all when None), as workers would."""
    with session_scope(settings) as session:
        batch_ids = session.scalars(select(Batch.id).where(Batch.send_id == send_id).order_by(Batch.id)).all()
        deliverer = Deliverer(settings, transport)
        return [deliverer.deliver_batch(session, b) for b in batch_ids[:count]]


def send_state(settings, send_id: int) -> str:
    with session_scope(settings) as session:
        return session.get(Send, send_id).state


def csrf_of(client, path: str) -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def log_in(client, email: str = OPERATOR, password: str = PASSWORD, **environ):
    token = csrf_of(client, "/console/login")
    return client.post("/console/login", data={"email": email, "password": password, "csrf_token": token,
                                           "next": "/ops/"}, environ_base=environ)


class Broker:
    """A broker whose queues hold the depths given (0 for any other)."""

    def __init__(self, **depths):
        self.depths = depths

    def queue_stats(self, names):
        return [QueueStats(name, self.depths.get(name, 0), None) for name in names]
