"""The world most sending tests build: one publication, one list, its readers and an issue;
and a send driven the way beat and workers drive it, until it ends."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, insert, select

from newsletter.sending import delivery, lifecycle
from newsletter.store.models import Delivery, IssueRow, MailingList, Membership, PublicationRow, Send, Subscriber, utcnow

HTML = (
    '<html><body><p>Hello %%name%%</p><a href="%%web_url%%">web</a>'
    '<a href="%%unsubscribe_url%%">unsubscribe</a><a href="%%preferences_url%%">prefs</a></body></html>'
)
TEXT = "Hello %%name%%\nWeb: %%web_url%%\nUnsubscribe: %%unsubscribe_url%%\nPreferences: %%preferences_url%%\n"


def make_world(session, count=20, *, slug="gazette", name="The Gazette", sending: dict | None = None,
               reader: str = "reader", digits: int = 3):
    """A publication (its ``sending`` block, if given), its list "all" of ``count``
    confirmed readers (``<reader>000@example.com`` ..., numbered with ``digits``)
    and an issue; the three rows."""
    pub = PublicationRow(
        slug=slug, name=name, from_name=name, from_email=f"news@{slug}.example.org",
        reply_to=f"editor@{slug}.example.org", postal_address="1 High Street, Exampleton",
        web_base_url=f"https://{slug}.example.org/", timezone="Europe/London", language="en-GB", settings={},
        sending=sending or {},
    )
    session.add(pub)
    session.flush()
    lst = MailingList(publication_id=pub.id, slug="all", name="Everyone", description="")
    session.add(lst)
    session.flush()
    if count:  # in two statements however many: some tests want thousands
        ids = session.scalars(insert(Subscriber).returning(Subscriber.id), [
            {"email": f"{reader}{i:0{digits}d}@example.com", "name": f"Reader {i}", "status": "active",
             "attributes": {}} for i in range(count)
        ]).all()
        session.execute(insert(Membership), [{"list_id": lst.id, "subscriber_id": i, "status": "confirmed"}
                                             for i in ids])
    issue = IssueRow(
        publication_id=pub.id, slug="2026-12", title="December", subject=f"{name}: December",
        preheader="News", issue_date=date(2026, 12, 1), html=HTML, text=TEXT, mjml="", content_hash="x",
    )
    session.add(issue)
    session.commit()
    return pub, lst, issue


def run_send(session, settings, transport, send_id, *, now=None, rounds=20):
    """Drive ticks and batches the way beat and workers would, until finished."""
    run_sends(session, settings, delivery.Deliverer(settings, transport), send_id, now=now, rounds=rounds)


def run_sends(session, settings, deliverer, *send_ids, now=None, rounds=20):
    """``run_send`` for several sends at once, through a deliverer of the caller's."""
    now = now or utcnow()
    for _ in range(rounds):
        for batch_id in lifecycle.tick(session, settings, now):
            deliverer.deliver_batch(session, batch_id)
        session.expire_all()
        if all(session.get(Send, s).state in ("finished", "cancelled", "paused") for s in send_ids):
            return
        now = utcnow()
    raise AssertionError("did not finish: " + "; ".join(
        f"send {s}: {lifecycle.summary_line(lifecycle.progress(session, s))}" for s in send_ids))


def states(session, send_id):
    return dict(
        session.execute(
            select(Delivery.state, func.count()).where(Delivery.send_id == send_id).group_by(Delivery.state)
        ).all()
    )
