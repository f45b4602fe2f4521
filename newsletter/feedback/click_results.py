"""What the click counts say about a send or an issue: by link, by section, by hour.

Takes in the counts ``feedback/clicks.py`` wrote and the issue they belong to
(its links are found again from its stored HTML and text, exactly as the
send rewrote them) and hands on ``ClickResults`` for the console, the
``newsletter sends clicks`` command, its JSON and the CSV download.
Nothing here can name a person: the tables it reads never do.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.feedback.clicks import CLASSES
from newsletter.authoring.counted_links import TRAP, issue_links
from newsletter.store.models import (
    ClickCount, ClickMessage, Delivery, IssueRow, PageView, PublicationRow, Send,
    DeliveryState,
)

FIRST_HOURS = 72


@dataclass(frozen=True)
class Figures:
    human: int = 0
    machine: int = 0
    unsure: int = 0

    @property
    def total(self) -> int:
        return self.human + self.machine + self.unsure

    def __add__(self, other: "Figures") -> "Figures":
        return Figures(self.human + other.human, self.machine + other.machine, self.unsure + other.unsure)


@dataclass(frozen=True)
class LinkResult:
    number: int
    url: str
    section: str
    figures: Figures

    def as_dict(self) -> dict:
        return {"number": self.number, "url": self.url, "section": self.section, **asdict(self.figures)}


@dataclass(frozen=True)
class ClickResults:
    """The clicks of one send, or of every send of an issue."""

    send_ids: tuple[int, ...]
    mode: str  # the publication's sending.clicks: "", aggregate, per_person
    delivered: int
    links: list[LinkResult]
    sections: list[tuple[str, Figures]]  # in the order they appear in the issue
    totals: Figures  # every link but the trap
    trap: Figures  # the hidden link: every fetch of it is a machine
    messages_with_human_click: int  # distinct messages, by their random nonce
    messages_with_any_click: int
    hours: list[Figures]  # the first FIRST_HOURS hours after the send started, one each
    page_views: list[tuple[str, int]] = field(default_factory=list)  # web copy pages of the issue

    @property
    def human_click_rate(self) -> float:
        """Distinct messages with a human click, per message delivered."""
        return self.messages_with_human_click / self.delivered if self.delivered else 0.0

    def as_json(self) -> dict:
        return {
            "sends": list(self.send_ids), "clicks": self.mode or "off", "delivered": self.delivered,
            "totals": asdict(self.totals), "trap": asdict(self.trap),
            "messages_with_human_click": self.messages_with_human_click,
            "messages_with_any_click": self.messages_with_any_click,
            "human_click_rate": round(self.human_click_rate, 4),
            "links": [link.as_dict() for link in self.links],
            "sections": [{"section": title, **asdict(figures)} for title, figures in self.sections],
            "first_hours": [asdict(h) for h in self.hours],
            "page_views": [{"page": page, "views": views} for page, views in self.page_views],
        }


def send_clicks(session: Session, send_id: int) -> ClickResults:
    send = session.get(Send, send_id)
    if send is None:
        from newsletter.errors import NotFound

        raise NotFound(f"there is no send {send_id}; `newsletter sends list` shows them")
    return _results(session, session.get(IssueRow, send.issue_id), [send])


def issue_clicks(session: Session, issue_id: int) -> ClickResults:
    issue = session.get(IssueRow, issue_id)
    sends = list(session.scalars(select(Send).where(Send.issue_id == issue_id).order_by(Send.id)))
    return _results(session, issue, sends)


def _results(session: Session, issue: IssueRow, sends: list[Send]) -> ClickResults:
    send_ids = tuple(s.id for s in sends)
    publication = session.get(PublicationRow, issue.publication_id)
    per_link: dict[int, Figures] = {}
    per_hour: dict[datetime, Figures] = {}
    if send_ids:
        for link, hour, human, machine, unsure in session.execute(
            select(ClickCount.link, ClickCount.hour, ClickCount.human, ClickCount.machine, ClickCount.unsure)
            .where(ClickCount.send_id.in_(send_ids))
        ):
            figures = Figures(human, machine, unsure)
            per_link[link] = per_link.get(link, Figures()) + figures
            if link != TRAP:
                per_hour[hour] = per_hour.get(hour, Figures()) + figures
    links = [LinkResult(link.number, link.url, link.section, per_link.get(link.number, Figures()))
             for link in issue_links(issue.html, issue.text)]
    sections: dict[str, Figures] = {}
    for link in links:
        sections[link.section] = sections.get(link.section, Figures()) + link.figures
    totals = sum((link.figures for link in links), Figures())
    started = min((s.started_at for s in sends if s.started_at), default=None)
    hours = []
    if started is not None:
        first = started.replace(minute=0, second=0, microsecond=0)
        hours = [per_hour.get(first + timedelta(hours=n), Figures()) for n in range(FIRST_HOURS)]
    human_messages, any_messages, delivered = 0, 0, 0
    if send_ids:
        human_messages = session.scalar(select(func.count()).select_from(ClickMessage).where(
            ClickMessage.send_id.in_(send_ids), ClickMessage.human > 0)) or 0
        any_messages = session.scalar(select(func.count()).select_from(ClickMessage).where(
            ClickMessage.send_id.in_(send_ids))) or 0
        delivered = session.scalar(select(func.count()).select_from(Delivery).where(
            Delivery.send_id.in_(send_ids), Delivery.state == DeliveryState.SENT)) or 0
    views = session.execute(
        select(PageView.path, func.sum(PageView.views)).where(
            PageView.publication_id == issue.publication_id, PageView.path.startswith(f"{issue.slug}/"))
        .group_by(PageView.path).order_by(PageView.path)
    ).all()
    return ClickResults(
        send_ids=send_ids, mode=(publication.sending or {}).get("clicks", ""), delivered=delivered,
        links=links, sections=[(title or "Top of the email", f) for title, f in sections.items()],
        totals=totals, trap=per_link.get(TRAP, Figures()),
        messages_with_human_click=human_messages, messages_with_any_click=any_messages,
        hours=hours, page_views=[(path, int(n)) for path, n in views],
    )


def clicks_csv(results: ClickResults) -> str:
    """One row per link: what a spreadsheet needs to draw its own charts."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["link", "url", "section", *CLASSES])
    for link in results.links:
        writer.writerow([link.number, _cell(link.url), _cell(link.section), link.figures.human,
                         link.figures.machine, link.figures.unsure])
    writer.writerow(["trap", "", "(the hidden link)", *(getattr(results.trap, c) for c in CLASSES)])
    return out.getvalue()


def _cell(value: str) -> str:
    # A spreadsheet runs a cell that starts with these as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def clicks_by_publication(session: Session) -> list[tuple[str, str, int]]:
    """(publication slug, class, clicks) over every send, for /metrics."""
    rows = session.execute(
        select(PublicationRow.slug, func.sum(ClickCount.human), func.sum(ClickCount.machine),
               func.sum(ClickCount.unsure))
        .join(IssueRow, IssueRow.publication_id == PublicationRow.id).join(Send, Send.issue_id == IssueRow.id)
        .join(ClickCount, ClickCount.send_id == Send.id).group_by(PublicationRow.slug).order_by(PublicationRow.slug)
    ).all()
    return [(slug, name, int(value or 0)) for slug, *values in rows for name, value in zip(CLASSES, values)]

