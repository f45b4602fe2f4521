"""The clicks page of an issue: its counts, and the issue beside the publication's last ten.

Takes in a draft that has been sent and hands on ``ClicksPage``: the click
results of every send of its issue (``feedback/click_results.py``), and for
it and the ten issues before it, delivered, human click rate and
unsubscribes per thousand, for the console's charts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.console.results import unsubscribed_after
from newsletter.feedback.click_results import ClickResults, issue_clicks
from newsletter.store.models import ClickMessage, Delivery, DeliveryState, Draft, IssueRow, Send

COMPARED = 10


@dataclass(frozen=True)
class IssueFigures:
    slug: str
    title: str
    delivered: int
    human_click_rate: float  # distinct messages with a human click, per message delivered
    unsubscribes_per_thousand: float
    current: bool


@dataclass(frozen=True)
class ClicksPage:
    results: ClickResults | None  # None before the issue was stored
    issues: list[IssueFigures]  # oldest first, this issue last

    @property
    def max_link_clicks(self) -> int:
        return max((link.figures.total for link in self.results.links), default=0) if self.results else 0

    @property
    def max_section_clicks(self) -> int:
        return max((f.total for _, f in self.results.sections), default=0) if self.results else 0

    @property
    def max_people_hour(self) -> int:
        return max((h.human + h.unsure for h in self.results.hours), default=0) if self.results else 0

    @property
    def max_machine_hour(self) -> int:
        return max((h.machine for h in self.results.hours), default=0) if self.results else 0

    @property
    def max_rate(self) -> float:
        return max((i.human_click_rate for i in self.issues), default=0.0)


def clicks_page(session: Session, draft: Draft) -> ClicksPage:
    if draft.issue_id is None:
        return ClicksPage(None, [])
    issue = session.get(IssueRow, draft.issue_id)
    return ClicksPage(issue_clicks(session, issue.id), compared_issues(session, issue))


def compared_issues(session: Session, issue: IssueRow) -> list[IssueFigures]:
    """This issue and the ``COMPARED`` sent before it in the publication, oldest first."""
    earlier = session.scalars(
        select(IssueRow).where(IssueRow.publication_id == issue.publication_id, IssueRow.id != issue.id,
                               IssueRow.issue_date <= issue.issue_date,
                               select(Send.id).where(Send.issue_id == IssueRow.id, Send.started_at.is_not(None)).exists())
        .order_by(IssueRow.issue_date.desc(), IssueRow.id.desc()).limit(COMPARED)
    ).all()
    return [_figures(session, row, row.id == issue.id) for row in [*reversed(earlier), issue]]


def _figures(session: Session, issue: IssueRow, current: bool) -> IssueFigures:
    sends = session.scalars(select(Send).where(Send.issue_id == issue.id)).all()
    ids = [s.id for s in sends]
    delivered = human = left = 0
    if ids:
        delivered = session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.send_id.in_(ids), Delivery.state == DeliveryState.SENT)) or 0
        human = session.scalar(select(func.count()).select_from(ClickMessage).where(
            ClickMessage.send_id.in_(ids), ClickMessage.human > 0)) or 0
        left = sum(unsubscribed_after(session, send) for send in sends)
    return IssueFigures(issue.slug, issue.title, delivered, human / delivered if delivered else 0.0,
                        1000 * left / delivered if delivered else 0.0, current)


def click_moments(session: Session, publication_id: int, subscriber_id: int) -> list[tuple]:
    """(when, what, detail) of each click this person made, newest first: only a publication
    with ``sending.clicks: per_person`` keeps them (``click_history``); erasure removes them."""
    from newsletter.authoring.counted_links import issue_links
    from newsletter.store.models import ClickHistory

    rows = session.execute(
        select(ClickHistory, IssueRow).join(Send, Send.id == ClickHistory.send_id)
        .join(IssueRow, IssueRow.id == Send.issue_id)
        .where(ClickHistory.subscriber_id == subscriber_id, IssueRow.publication_id == publication_id)
        .order_by(ClickHistory.clicked_at.desc()).limit(200)
    ).all()
    links: dict[int, dict[int, str]] = {}
    out = []
    for click, issue in rows:
        if issue.id not in links:
            links[issue.id] = {link.number: link.url for link in issue_links(issue.html, issue.text)}
        url = links[issue.id].get(click.link, "the hidden link" if click.link == 0 else f"link {click.link}")
        out.append((click.clicked_at, f"Clicked a link in “{issue.title}”", f"{url} ({click.kind})"))
    return out
