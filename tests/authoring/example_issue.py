"""An issue built in code, with one section of every kind and its pictures on
disk, for the authoring tests (render, checks, web copy)."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import PIL.Image

from newsletter.authoring.issue import Figure, Image, Issue, Item, Publication, Section, Source

# A 1x1 PNG: the files only have to exist.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def make_issue(folder: Path, *sections: Section, **changes) -> Issue:
    """An issue with one section of every kind (or the sections given), pictures on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("chair.png", "chart.png", "divider.png"):
        (folder / name).write_bytes(PNG)
    # The logo is shown 120 px wide: a 240 px file is sharp on high-density screens.
    PIL.Image.new("RGB", (240, 80), "#005eb8").save(folder / "logo.png")
    (folder / "publication.yaml").write_text("slug: example\n")
    publication = Publication(
        slug="example-news", name="Example News", from_name="Example News", from_email="news@example.org",
        reply_to="team@example.org", postal_address="Example News, 1 Example Street\nExampleton EX1 1AA",
        web_base_url="https://news.example.org/example-news/", logo=folder / "logo.png",
        logo_alt="Example News logo", logo_width=120, why_receiving="You receive this because you signed up at example.org.",
        source=Source(folder / "publication.yaml", 1),
    )
    fields = dict(
        publication=publication, slug="2021-09", title="Example Monthly", subject="Example News: September 2021",
        preheader="Our chair's letter, our priorities and this month's numbers.", issue_date=date(2021, 9, 1),
        sections=sections or every_kind(folder), folder=folder, source=Source(folder / "issue.yaml", 1),
    )
    return Issue(**(fields | changes))


def every_kind(folder: Path) -> tuple[Section, ...]:
    return (
        Section(kind="letter", id="chair", title="A letter from our chair",
                body="Dear %%name%%,\n\nWe *continue* [our work](https://example.org/work).",
                signoff="With best wishes", author="The Chair", role="Independent Chair",
                image=Image(folder / "chair.png", "The chair at the board meeting"),
                source=Source(folder / "01-chair.md", 1), body_line=8),
        Section(kind="teasers", id="priorities", title="Our priorities", items=(
            Item(heading="Healthy ageing", summary="Staying **well** for longer.", slug="healthy-ageing",
                 article="The full story of healthy ageing.\n\nA second paragraph."),
            Item(heading="System savings", summary="Where the money goes.", slug="system-savings",
                 url="https://example.org/savings", link_text="Read the plan"),
        ), source=Source(folder / "02-priorities.md", 1)),
        Section(kind="news", id="news", title="News in brief", items=(
            Item(heading="Flu jabs open", summary="Book yours now.", slug="flu", url="https://example.org/flu"),
        ), source=Source(folder / "03-news.md", 1)),
        Section(kind="figures", id="numbers", title="In numbers", body="Vaccinations so far.",
                figures=(Figure("835,002", "first doses"), Figure("771,900", "second doses")),
                source=Source(folder / "04-numbers.md", 1), body_line=5),
        Section(kind="image", id="chart", title="Vaccinations by week",
                image=Image(folder / "chart.png", "Bar chart of weekly vaccinations", caption="Source: example.org"),
                source=Source(folder / "05-chart.md", 1)),
        Section(kind="image", id="divider", image=Image(folder / "divider.png", "", decorative=True),
                source=Source(folder / "06-divider.md", 1)),
        Section(kind="text", id="contact", title="Get in touch",
                body="Write to [the team](mailto:team@example.org).",
                source=Source(folder / "07-contact.md", 1), body_line=4),
    )
