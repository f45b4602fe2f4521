"""check_issue: each check catches what would fail a reader, and says where and what to do."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.authoring.example_issue import every_kind, make_issue

from newsletter.authoring.checks import check_issue
from newsletter.authoring.issue import Image, Item, Section, Source
from newsletter.authoring.render import render_issue


def problems_for(issue):
    return check_issue(issue, render_issue(issue))


def errors_for(issue):
    return [p for p in problems_for(issue) if p.is_error]


def with_text(tmp_path, body: str, body_line: int = 10, **changes):
    """The full example issue plus one text section whose body starts at body_line of its file."""
    folder = tmp_path / "issue"
    section = Section(kind="text", id="extra", title="Extra", body=body,
                      source=Source(folder / "08-extra.md", 1), body_line=body_line)
    return make_issue(folder, *every_kind(folder), section, **changes)


def test_the_example_issue_passes(tmp_path):
    assert problems_for(make_issue(tmp_path / "issue")) == []


def test_html_over_gmails_clip_threshold_is_an_error(tmp_path):
    issue = with_text(tmp_path, "\n\n".join(["A paragraph of news about the partnership. " * 10] * 260))
    messages = [p.message for p in errors_for(issue)]
    assert any("Gmail clips messages over 102 KB" in m for m in messages)
    assert any("unsubscribe link is past Gmail's clip point" in m for m in messages)


def test_html_near_the_threshold_is_a_warning(tmp_path):
    issue = with_text(tmp_path, "\n\n".join(["A paragraph of news about the partnership. " * 10] * 160))
    problems = problems_for(issue)
    assert [p.severity for p in problems] == ["warning"]
    assert "Gmail clips at 102 KB" in problems[0].message


def test_a_picture_without_alt_text_is_named_with_its_file(tmp_path):
    folder = tmp_path / "issue"
    source = Source(folder / "09-photo.md", 3)
    section = Section(kind="image", id="photo", image=Image(folder / "chart.png", "", source=source),
                      source=Source(folder / "09-photo.md", 1))
    problems = errors_for(make_issue(folder, *every_kind(folder), section))
    assert [(p.where, p.message) for p in problems] == [(f"{folder / '09-photo.md'}:3", "picture chart.png has no alt text")]
    assert "mark it decorative" in problems[0].fix


def test_a_missing_picture_file_is_an_error(tmp_path):
    folder = tmp_path / "issue"
    section = Section(kind="image", id="photo", image=Image(folder / "missing.png", "A photo"),
                      source=Source(folder / "09-photo.md", 1))
    problems = errors_for(make_issue(folder, *every_kind(folder), section))
    assert len(problems) == 1
    assert problems[0].where == f"{folder / '09-photo.md'}:1"
    assert "picture missing.png not found" in problems[0].message


def test_a_markdown_picture_without_alt_text_is_reported_at_its_line(tmp_path):
    issue = with_text(tmp_path, "Intro.\n\n![](https://example.org/photo.png)", body_line=6)
    problems = errors_for(issue)
    assert [(p.where, p.message) for p in problems] == [
        (f"{issue.folder / '08-extra.md'}:8", "a picture in the text has no alt text")]


@pytest.mark.parametrize("url, message, fix", [
    ("http://example.org/page", "is not secure (http)", "use the https:// address"),
    ("/about-us", "is relative", "use a full https:// address"),
    ("#contact", "is relative", "use a full https:// address"),
])
def test_links_must_be_absolute_https(tmp_path, url, message, fix):
    issue = with_text(tmp_path, f"First line.\n\nSee [this page]({url}).", body_line=4)
    problems = errors_for(issue)
    assert len(problems) == 1
    assert problems[0].where == f"{issue.folder / '08-extra.md'}:6"
    assert url in problems[0].message and message in problems[0].message
    assert problems[0].fix == fix


def test_an_items_http_url_is_reported_at_the_item(tmp_path):
    folder = tmp_path / "issue"
    item = Item(heading="Old site", summary="Still here.", slug="old", url="http://example.org/old",
                source=Source(folder / "09-more.md", 7))
    section = Section(kind="news", id="more", title="More", items=(item,), source=Source(folder / "09-more.md", 1))
    problems = errors_for(make_issue(folder, *every_kind(folder), section))
    assert [p.where for p in problems] == [f"{folder / '09-more.md'}:7"]


def test_mailto_links_are_allowed(tmp_path):
    assert errors_for(with_text(tmp_path, "Write to [us](mailto:team@example.org).")) == []


@pytest.mark.parametrize("subject, message", [
    ("", "the subject is empty"),
    ("   ", "the subject is empty"),
    ("News " * 40, "the subject is 199 characters"),
])
def test_a_subject_must_be_present_and_not_too_long(tmp_path, subject, message):
    issue = make_issue(tmp_path / "issue", subject=subject)
    problems = errors_for(issue)
    # Built here without a file: line 1 of the manifest (a loaded issue names the subject's own line).
    assert [p.where for p in problems] == [f"{issue.folder / 'issue.yaml'}:1"]
    assert message in problems[0].message


def test_a_long_subject_is_a_warning(tmp_path):
    problems = problems_for(make_issue(tmp_path / "issue", subject="A subject line that goes on and on about everything in it"
                                                                     " and more"))
    assert [(p.severity, p.where.endswith("issue.yaml:1")) for p in problems] == [("warning", True)]


def test_an_empty_preheader_is_an_error(tmp_path):
    problems = errors_for(make_issue(tmp_path / "issue", preheader=""))
    assert [(p.where.rsplit("/", 1)[-1], p.message.split(";")[0]) for p in problems] == [
        ("issue.yaml:1", "the preheader is empty")]


@pytest.mark.parametrize("token", ["%%first_name%%", "%%Name%%", "%% name%%"])
def test_an_unknown_placeholder_is_reported_where_it_was_written(tmp_path, token):
    issue = with_text(tmp_path, f"Hello {token},\n\nWelcome.", body_line=3)
    problems = errors_for(issue)
    assert len(problems) == 1
    assert problems[0].where == f"{issue.folder / '08-extra.md'}:3"
    assert f"unknown placeholder {token}" in problems[0].message
    assert "left unfilled" in problems[0].message
    assert "%%name%%" in problems[0].fix


def test_a_placeholder_in_a_custom_web_template_is_an_error(tmp_path):
    issue = make_issue(tmp_path / "issue")
    custom = tmp_path / "custom" / "web" / "sections"
    custom.mkdir(parents=True)
    (custom / "text.html.j2").write_text("<h2>{{ section.title }}</h2><p>Hello %%name%%</p>\n")
    problems = check_issue(issue, render_issue(issue, templates_dir=tmp_path / "custom"))
    assert [(p.where, p.is_error) for p in problems] == [("web copy index.html", True)]


def test_unsafe_markup_is_reported_at_its_line(tmp_path):
    body = "First paragraph.\n\n<script>alert('hi')</script>\n\n<a href=\"https://example.org\" onclick=\"x()\">x</a>"
    issue = with_text(tmp_path, body, body_line=5)
    problems = errors_for(issue)
    path = issue.folder / "08-extra.md"
    assert [(p.where, p.message) for p in problems] == [
        (f"{path}:7", "a <script> element"),
        (f"{path}:9", "an onclick attribute"),
    ]
    assert "dropped from the email" in problems[0].fix


def test_unsafe_markup_in_an_item_names_the_item(tmp_path):
    folder = tmp_path / "issue"
    item = Item(heading="Events", summary="<iframe src=\"https://example.org\"></iframe>", slug="events",
                url="https://example.org/events", source=Source(folder / "09-more.md", 4))
    section = Section(kind="news", id="more", title="More", items=(item,), source=Source(folder / "09-more.md", 1))
    problems = errors_for(make_issue(folder, *every_kind(folder), section))
    assert [p.where for p in problems] == [f"{folder / '09-more.md'}:4"]
    assert "'Events'" in problems[0].message and "iframe" in problems[0].message


def test_mjml_problems_are_part_of_the_check(tmp_path):
    issue = make_issue(tmp_path / "issue")
    custom = tmp_path / "custom" / "email" / "sections"
    custom.mkdir(parents=True)
    (custom / "text.mjml.j2").write_text("<mj-section><mj-column><mj-txt>{{ section.title }}</mj-txt></mj-column></mj-section>\n")
    rendered = render_issue(issue, templates_dir=tmp_path / "custom")
    problems = check_issue(issue, rendered)
    assert [p.message for p in problems] == ["unknown MJML element <mj-txt>"]


def test_the_logo_needs_alt_text(tmp_path):
    issue = make_issue(tmp_path / "issue")
    issue = replace(issue, publication=replace(issue.publication, logo_alt=""))
    problems = errors_for(issue)
    assert [p.where for p in problems] == [f"{issue.publication.source.path}:1"]
