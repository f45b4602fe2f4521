"""render_issue: one MJML compile per issue, a text part from the same content, a public web copy."""

from __future__ import annotations

import os
import re
from dataclasses import replace

import pytest

from newsletter.authoring import placeholders
from newsletter.errors import InputError
from newsletter.authoring.issue import Issue
from newsletter.authoring.render import render_issue, validate_mjml
from tests.authoring.example_issue import make_issue


@pytest.fixture
def issue(tmp_path) -> Issue:
    return make_issue(tmp_path / "issue")


@pytest.fixture
def rendered(issue):
    return render_issue(issue)


def headings(html: str) -> list[tuple[int, str]]:
    return [(int(level), re.sub(r"<[^>]+>", "", text).strip())
            for level, text in re.findall(r"<h([1-3])[^>]*>(.*?)</h\1>", html, re.S)]


def test_every_section_kind_reaches_the_html_and_the_text(rendered):
    for expected in ("A letter from our chair", "With best wishes", "Independent Chair", "Our priorities",
                     "Healthy ageing", "News in brief", "Flu jabs open", "835,002", "second doses",
                     "Vaccinations by week", "Source: example.org", "Get in touch"):
        assert expected in rendered.html, expected
        assert expected.lower() in rendered.text.lower(), expected  # text headings are in capitals
    assert "<em>continue</em>" in rendered.html
    assert "We continue our work (https://example.org/work)." in rendered.text


def test_headings_come_in_order_title_sections_items(rendered):
    assert headings(rendered.html) == [
        (1, "Example Monthly"), (2, "A letter from our chair"), (2, "Our priorities"),
        (3, "Healthy ageing"), (3, "System savings"), (2, "News in brief"), (3, "Flu jabs open"),
        (2, "In numbers"), (2, "Vaccinations by week"), (2, "Get in touch"),
    ]


def test_the_email_head_carries_language_preheader_and_web_link(rendered):
    assert '<mjml lang="en-GB">' in rendered.mjml
    assert 'lang="en-GB"' in rendered.html
    assert "Our chair&#39;s letter, our priorities" in rendered.html
    top = rendered.html.index("Having trouble viewing this email?")
    assert top < rendered.html.index("Example Monthly</h1>")
    assert '<a href="%%web_url%%">View it as a web page</a>' in rendered.html


def test_pictures_are_absolute_under_the_web_copy_with_alt_text(issue, rendered):
    images = dict(re.findall(r'<img alt="([^"]*)"[^>]*src="([^"]+)"', rendered.html))
    assert images["Example News logo"] == issue.web_url + "images/logo.png"
    assert images["Bar chart of weekly vaccinations"] == issue.web_url + "images/chart.png"
    assert images[""] == issue.web_url + "images/divider.png"  # the decorative one
    assert rendered.images["images/chart.png"] == issue.folder / "chart.png"


def test_read_more_goes_to_the_url_or_the_article_page(issue, rendered):
    healthy, savings = issue.sections[1].items
    assert f'href="{issue.article_url(healthy)}"' in rendered.html
    assert f"Read more: {issue.article_url(healthy)}" in rendered.text
    assert 'href="https://example.org/savings"' in rendered.html
    assert "Read the plan: https://example.org/savings" in rendered.text


def test_the_footer_has_address_reason_and_both_links(rendered):
    for part in (rendered.html, rendered.text):
        assert "1 Example Street" in part
        assert "You receive this because you signed up at example.org." in part
    assert '<a href="%%unsubscribe_url%%">Unsubscribe</a>' in rendered.html
    assert '<a href="%%preferences_url%%">Manage your preferences</a>' in rendered.html
    assert "Unsubscribe: %%unsubscribe_url%%" in rendered.text
    assert "Manage your preferences: %%preferences_url%%" in rendered.text


def test_placeholders_survive_compilation_exactly(rendered):
    expected = {"name", "web_url", "unsubscribe_url", "preferences_url"}
    assert set(placeholders.find(rendered.mjml)) == expected
    assert set(placeholders.find(rendered.html)) == expected
    assert set(placeholders.find(rendered.text)) == expected
    for name in expected:
        assert rendered.html.count(f"%%{name}%%") == rendered.mjml.count(f"%%{name}%%")
    values = {name: f"https://example.com/{name}" for name in placeholders.NAMES}
    assert placeholders.find(placeholders.fill(rendered.html, values, escape_html=True)) == []
    assert "%%" not in placeholders.fill(rendered.text, values, escape_html=False)


def test_web_pages_hold_the_issue_and_each_article(issue, rendered):
    assert set(rendered.web_pages) == {"index.html", "healthy-ageing/index.html"}
    article = rendered.web_pages["healthy-ageing/index.html"]
    assert "A second paragraph." in article
    assert '<img src="../images/logo.png"' in article
    assert "Dear reader," in rendered.web_pages["index.html"]


def test_colours_and_names_come_from_the_publication(tmp_path):
    issue = make_issue(tmp_path / "issue")
    other = replace(issue.publication, name="Other Bulletin",
                    colours=replace(issue.publication.colours, primary="#aa0033"))
    rendered = render_issue(replace(issue, publication=other))
    assert "#aa0033" in rendered.html and "#005eb8" not in rendered.html
    assert "Other Bulletin" in rendered.text


def test_a_publication_templates_folder_overrides_a_default(tmp_path):
    issue = make_issue(tmp_path / "issue")
    own = issue.publication.source.path.parent / "templates" / "email" / "sections"
    own.mkdir(parents=True)
    (own / "text.mjml.j2").write_text(
        '<mj-section><mj-column><mj-text><h2>{{ section.title }} (our way)</h2></mj-text></mj-column></mj-section>\n')
    assert "Get in touch (our way)" in render_issue(issue).html


def test_a_template_edited_between_renders_is_used_at_once_even_with_the_same_time_stamp(tmp_path):
    """Templates are compiled once per process; an edit is seen by its content, not its file time."""
    issue = make_issue(tmp_path / "issue")
    own = issue.publication.source.path.parent / "templates" / "email" / "sections"
    own.mkdir(parents=True)
    template = own / "text.mjml.j2"
    template.write_text('<mj-section><mj-column><mj-text><h2>{{ section.title }} (one)</h2></mj-text></mj-column></mj-section>\n')
    stamp = template.stat().st_mtime_ns
    assert "Get in touch (one)" in render_issue(issue).html
    template.write_text('<mj-section><mj-column><mj-text><h2>{{ section.title }} (two)</h2></mj-text></mj-column></mj-section>\n')
    os.utime(template, ns=(stamp, stamp))
    html = render_issue(issue).html
    assert "Get in touch (two)" in html and "(one)" not in html


@pytest.mark.parametrize("template, message", [
    ("<mj-section>\n<mj-column>\n{{ section.no_such_field }}\n</mj-column>\n</mj-section>\n", "no_such_field"),
    ("<mj-section>\n<mj-column>\n{% if %}\n</mj-column>\n</mj-section>\n", "syntax"),
])
def test_an_error_in_a_custom_template_names_its_file_and_line(tmp_path, template, message):
    issue = make_issue(tmp_path / "issue")
    custom = tmp_path / "custom"
    (custom / "email" / "sections").mkdir(parents=True)
    (custom / "email" / "sections" / "text.mjml.j2").write_text(template)
    with pytest.raises(InputError) as caught:
        render_issue(issue, templates_dir=custom)
    problem = caught.value.problems[0]
    assert problem.where == f"{custom / 'email' / 'sections' / 'text.mjml.j2'}:3"
    assert message in problem.message


def test_an_unknown_mjml_element_is_reported_with_its_line():
    problems = validate_mjml('<mjml lang="en">\n<mj-body>\n<mj-secton>\n</mj-secton>\n</mj-body>\n</mjml>')
    assert [(p.where, p.message) for p in problems] == [
        ("email.mjml:3", "unknown MJML element <mj-secton>"),
    ]


def test_mjml_that_does_not_compile_is_an_input_error(tmp_path):
    issue = make_issue(tmp_path / "issue")
    custom = tmp_path / "custom"
    (custom / "email").mkdir(parents=True)
    (custom / "email" / "layout.mjml.j2").write_text("<mjml><mj-body><mj-section>\n")
    with pytest.raises(InputError) as caught:
        render_issue(issue, templates_dir=custom)
    assert "MJML does not compile" in caught.value.problems[0].message
