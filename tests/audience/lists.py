"""The audience tests' publication, lists and CSV files."""

from __future__ import annotations

from newsletter.audience import subscribers as subs
from newsletter.authoring.issue import Publication


def publication(slug: str = "together", **changes) -> Publication:
    values = dict(
        slug=slug, name="Together We're Better", from_name="Together We're Better",
        from_email="news@example.org", reply_to="team@example.org",
        postal_address="1 Example Street, Example Town", web_base_url="https://news.example.org/",
        why_receiving="You receive this because you work in the partnership.",
    )
    return Publication(**{**values, **changes})


def write_csv(tmp_path, text: str, name: str = "people.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def memberships(session, email: str) -> dict[str, str]:
    subscriber = subs.get_subscriber(session, email)
    return dict(subs.memberships_of(session, [subscriber.id]).get(subscriber.id, []))
