"""An issue sent through the console and clicked, for the clicks page's tests and screenshots.

The sample issue is uploaded, approved and scheduled through the console's own
forms, delivered in-process to a memory transport, and its messages' links
are followed through the web app: people (a browser's user agent, some time
after delivery), a mail gateway (HEAD then GET of every link, a scanner's user
agent) and, for ``history``, earlier issues with their own sends and clicks.
"""

from __future__ import annotations

import random
import re
import time
from datetime import timedelta

from sqlalchemy import select, update

from newsletter.store.db import session_scope
from tests.console_world import APPROVER, EDITOR, log_in, post, sample_zip, upload

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
SCANNER = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"
LINK = re.compile(r'href="(https?://[^"]+/c/[^"]+)"')


def send_through_console(settings, world, app, slug: str = "2021-09", clicks: str = ""):
    """Upload, approve, schedule now and deliver the sample issue; (draft id, memory transport).
    ``clicks`` sets the publication's ``sending.clicks`` (as a publication.yaml would) before it goes."""
    from newsletter.sending.delivery import Deliverer
    from newsletter.sending.lifecycle import claim_due_sends, finish_sends
    from newsletter.store.models import Draft
    from tests.memory_transport import MemoryTransport

    editor, approver = app.test_client(), app.test_client()
    log_in(editor, EDITOR)
    log_in(approver, APPROVER)
    upload(editor, sample_zip(prefix=f"{slug}/"), name=f"{slug}.zip", slug=slug, publication_id=world.publication_id)
    with session_scope(settings) as session:
        draft_id = session.scalars(select(Draft.id).where(Draft.slug == slug)).one()
    page = f"/console/issues/{draft_id}"
    post(editor, f"{page}/submit", page=page)
    post(approver, f"{page}/approve", page=page)
    post(editor, f"{page}/schedule", {"lists": "everyone", "when": "now"}, page=page)
    mail = MemoryTransport()
    if clicks:
        from newsletter.store.models import PublicationRow

        with session_scope(settings) as session:
            session.execute(update(PublicationRow).where(PublicationRow.id == world.publication_id)
                            .values(sending={"clicks": clicks}))
    with session_scope(settings) as session:
        batches = claim_due_sends(session, settings)
    with session_scope(settings) as session:
        deliverer = Deliverer(settings, mail)
        for batch_id in batches:
            deliverer.deliver_batch(session, batch_id)
    with session_scope(settings) as session:
        finish_sends(session)
    return draft_id, mail


def links_of(envelope) -> list[str]:
    from email import message_from_bytes, policy

    html = message_from_bytes(envelope.message, policy=policy.default).get_body(("html",)).get_content()
    return [link.replace("&amp;", "&") for link in LINK.findall(html)]


def click_like_readers(settings, app, mail, *, readers: float = 0.4, seed: int = 1, gateways: int = 3,
                       after_hours: int = 0) -> None:
    """Some people click one or two links, favouring the first ones; a few gateways fetch every link."""
    counter = app.extensions["newsletter.clicks"]
    client = app.test_client()
    rng = random.Random(seed)
    path = lambda url: url.split("://", 1)[1].split("/", 1)[1]
    for n, envelope in enumerate(mail.accepted):
        links = links_of(envelope)[:-1]  # the last is the trap nobody sees
        if n < gateways:
            counter.clock = lambda: time.time() + 2
            for url in links_of(envelope):
                client.head("/" + path(url), headers={"User-Agent": SCANNER})
                client.get("/" + path(url), headers={"User-Agent": SCANNER})
            continue
        if rng.random() > readers:
            continue
        if rng.random() < 0.06:  # a reader who clicks seconds after delivery: unsure
            counter.clock = lambda: time.time() + 5
            client.get("/" + path(links[rng.randrange(len(links))]), headers={"User-Agent": BROWSER})
            continue
        for _ in range(rng.choice((1, 1, 1, 2))):
            hours = after_hours + int(rng.expovariate(1 / 6))
            counter.clock = lambda hours=hours: time.time() + 3600 * hours + 60
            link = links[min(int(rng.expovariate(1 / 4)), len(links) - 1)]
            client.get("/" + path(link), headers={"User-Agent": BROWSER})
    counter.flush()
    counter.clock = time.time


def age_send(settings, draft_id: int, days: int) -> None:
    """Move a send, and its counts, ``days`` into the past (for earlier issues)."""
    from newsletter.store.models import ClickCount, Draft, IssueRow, Send

    with session_scope(settings) as session:
        issue_id = session.get(Draft, draft_id).issue_id
        ids = session.scalars(select(Send.id).where(Send.issue_id == issue_id)).all()
        for send in session.scalars(select(Send).where(Send.id.in_(ids))):
            send.started_at -= timedelta(days=days)
        issue = session.get(IssueRow, issue_id)
        issue.issue_date -= timedelta(days=days)
        for count in session.scalars(select(ClickCount).where(ClickCount.send_id.in_(ids))):
            session.execute(update(ClickCount).where(
                ClickCount.send_id == count.send_id, ClickCount.link == count.link, ClickCount.hour == count.hour)
                .values(hour=count.hour - timedelta(days=days)))
