"""The email as a subscriber sees it: light and dark, on a phone and a desktop,
read by a screen reader, and scored by a spam filter.

Two emails are looked at: the sample issue, and a one-letter issue of a new
publication that gives only what it must. Real tools judge them: axe-core in
Debian's Chromium (through Selenium), SpamAssassin with its local rules only
(no network tests), and the MJML compiler's own Outlook markup, pinned by a
golden file. Chromium, SpamAssassin and axe-core come from
scripts/install-browser and scripts/install-test-services.
"""

from __future__ import annotations

import html as html_module
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import PIL.Image
import pytest

from newsletter.authoring.build import build_issue
from newsletter.authoring.checks import check_issue
from newsletter.authoring.content import load_issue
from newsletter.authoring.issue import DARK_COLOURS, Colours
from newsletter.authoring.preview import write_sample_email
from newsletter.authoring.render import render_issue
from tests.conftest import REQUIRE_SERVICES, SAMPLE_ISSUE

GOLDEN = Path(__file__).parent.parent / "golden"
WIDTHS = (375, 600)
SCHEMES = ("light", "dark")


def missing(tool: str, how: str):
    message = f"{tool} is not installed ({how})"
    if REQUIRE_SERVICES:
        pytest.fail(message + "; NEWSLETTER_REQUIRE_SERVICES is set, so this is a failure", pytrace=False)
    pytest.skip(message)


# --- the two emails -------------------------------------------------------------------

LETTER_PUBLICATION = """\
name: Parish Letter
from_email: letter@example.org
postal_address: |
  The Vicarage, Church Lane
  Ambridge AM1 1AA
web_base_url: https://letter.example.org/
"""
LETTER_MANIFEST = """\
title: A letter from the vicarage
subject: News from the vicarage
preheader: Harvest supper, the bells, and thanks.
date: 2021-10-01
sections:
  - 01-letter.md
"""
LETTER = """\
---
kind: letter
title: Dear friends
author: Jo Smith
role: Vicar
signoff: With every good wish,
---

The harvest supper raised enough to re-hang the bells. Thank you to everyone
who cooked, carried and washed up.

Ringing practice starts again on Thursday at 7.
"""


@pytest.fixture(scope="module")
def letter_issue(tmp_path_factory) -> Path:
    """A new publication's first issue: one letter, no logo, default colours."""
    root = tmp_path_factory.mktemp("parish-letter")
    (root / "publication.yaml").write_text(LETTER_PUBLICATION)
    folder = root / "issues" / "2021-10"
    folder.mkdir(parents=True)
    (folder / "issue.yaml").write_text(LETTER_MANIFEST)
    (folder / "01-letter.md").write_text(LETTER)
    return folder


@pytest.fixture(params=["sample", "letter"])
def issue_folder(request, letter_issue) -> Path:
    return SAMPLE_ISSUE if request.param == "sample" else letter_issue


# --- in a browser ------------------------------------------------------------------------


def show(driver, page: Path, scheme: str, width: int) -> None:
    """``page`` in Chromium at ``width`` CSS pixels, with the reader's colour scheme."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 480})
    driver.get(page.as_uri())


def axe_violations(driver, axe_source: str) -> list[str]:
    driver.execute_script(axe_source)
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations.map("
        "  v => `${v.id} (${v.impact}): ${v.nodes.map(n => n.html.slice(0, 100)).join(' | ')}`)),"
        "  e => done(['axe failed: ' + e]));")


def rgb(colour: str) -> str:
    digits = colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(digits[i:i + 2], 16) for i in (0, 2, 4)))


def test_no_accessibility_violations_and_no_sideways_scrolling(browser, axe_source, issue_folder, tmp_path):
    page = write_sample_email(render_issue(load_issue(issue_folder)), tmp_path / "email")
    for scheme in SCHEMES:
        for width in WIDTHS:
            show(browser, page, scheme, width)
            scroll_width = browser.execute_script("return document.documentElement.scrollWidth")
            assert scroll_width <= width, f"{scheme} at {width} px scrolls sideways ({scroll_width} px wide)"
            assert axe_violations(browser, axe_source) == [], f"{scheme} at {width} px"


def computed(driver, selector: str, prop: str) -> str:
    return driver.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]]", selector, prop)


def test_the_readers_colour_scheme_decides_the_colours(browser, tmp_path):
    page = write_sample_email(render_issue(load_issue(SAMPLE_ISSUE)), tmp_path / "email")
    for scheme, colours in (("light", Colours()), ("dark", DARK_COLOURS)):
        show(browser, page, scheme, 600)
        assert computed(browser, "body", "backgroundColor") == rgb(colours.background), scheme
        assert computed(browser, ".nl-surface", "backgroundColor") == rgb(colours.surface), scheme
        assert computed(browser, ".nl-surface .nl-text p", "color") == rgb(colours.text), scheme
        assert computed(browser, ".nl-surface h2", "color") == rgb(colours.primary), scheme
        assert computed(browser, ".nl-surface a", "color") == rgb(colours.primary), scheme
        # The header band is the brand's colour in both, its title white.
        assert computed(browser, ".nl-band", "backgroundColor") == rgb(Colours().primary), scheme
        assert computed(browser, ".nl-band h1", "color") == "rgb(255, 255, 255)", scheme


def test_the_logo_is_shown_at_its_set_width_from_a_sharper_file(browser, tmp_path):
    page = write_sample_email(render_issue(load_issue(SAMPLE_ISSUE)), tmp_path / "email")
    show(browser, page, "light", 375)
    logo = browser.execute_script(
        "const img = document.querySelector('img[alt=\"Together We\\'re Better\"]');"
        "return [img.naturalWidth, img.getBoundingClientRect().width];")
    assert logo == [192, 96]


def test_a_dark_logo_replaces_the_logo_where_the_scheme_is_dark(browser, tmp_path):
    publication = tmp_path / "together-were-better"
    shutil.copytree(SAMPLE_ISSUE.parent.parent, publication)
    PIL.Image.new("RGB", (192, 192), "#ffffff").save(publication / "logo-dark.png")
    yaml = publication / "publication.yaml"
    yaml.write_text(yaml.read_text().replace("logo_width: 96\n", "logo_width: 96\nlogo_dark: logo-dark.png\n"))
    page = write_sample_email(render_issue(load_issue(publication / "issues" / "2021-09")), tmp_path / "email")
    visible = ("return [...document.querySelectorAll('img')].filter(i => i.getBoundingClientRect().height > 0)"
               ".map(i => i.getAttribute('src')).filter(s => s.includes('logo'))")
    show(browser, page, "light", 600)
    assert browser.execute_script(visible) == ["./images/logo.png"]
    show(browser, page, "dark", 600)
    assert browser.execute_script(visible) == ["./images/logo-dark.png"]


# --- in the HTML --------------------------------------------------------------------------


def sample_html() -> str:
    return render_issue(load_issue(SAMPLE_ISSUE)).html


def test_the_email_declares_light_and_dark_support():
    html = sample_html()
    assert '<meta name="color-scheme" content="light dark"' in html
    assert '<meta name="supported-color-schemes" content="light dark"' in html
    assert "@media (prefers-color-scheme: dark)" in html
    assert "[data-ogsc]" in html  # Outlook.com's dark mode


def test_the_preheader_is_hidden_without_a_colour_of_its_own():
    html = sample_html()
    issue = load_issue(SAMPLE_ISSUE)
    match = re.search(r'<div class="nl-preheader" style="([^"]*)">([^<]*)</div>', html)
    assert match, "the preheader is the first thing in the body"
    style, text = match.groups()
    assert html_module.unescape(text).startswith(issue.preheader)
    for rule in ("display:none", "font-size:0", "max-height:0", "opacity:0", "overflow:hidden", "mso-hide:all"):
        assert rule in style
    assert "color" not in style  # white on white is what spam filters score
    assert "color:#ffffff" not in html.split("<body", 1)[1].split("nl-band", 1)[0]


def test_the_content_is_an_article_labelled_with_the_subject_in_a_main_landmark():
    html = sample_html()
    assert re.search(r'<div role="main"><div aria-label="Together We\'re Better: September 2021"[^>]*'
                     r'role="article"', html.replace("&#39;", "'"))
    tables = re.findall(r"<table\b[^>]*>", html)
    assert tables and all('role="presentation"' in t for t in tables)


def test_the_footer_names_the_sender_once(letter_issue):
    for folder in (SAMPLE_ISSUE, letter_issue):
        rendered = render_issue(load_issue(folder))
        name = rendered.issue.publication.name.replace("'", "&#39;")
        footer = rendered.html[rendered.html.index("Manage your preferences"):]
        assert footer.count(name) == 1, folder
        text_footer = rendered.text[rendered.text.index("Manage your preferences"):]
        assert text_footer.count(rendered.issue.publication.name) == 1, folder


def test_an_address_that_starts_with_the_name_is_not_repeated(tmp_path):
    issue = load_issue(SAMPLE_ISSUE)
    publication = replace(issue.publication, postal_address="Together We're Better, 1 Partnership Way, Stafford")
    html = render_issue(replace(issue, publication=publication)).html
    footer = html[html.index("Manage your preferences"):]
    assert footer.count("Together We&#39;re Better") == 1
    assert "Together We&#39;re Better, 1 Partnership Way, Stafford" in footer


def test_every_section_kind_keeps_one_vertical_rhythm():
    """No section or block sets its own padding but the rhythm's: 24px above a section, 8px below."""
    mjml = render_issue(load_issue(SAMPLE_ISSUE)).mjml
    body = mjml[mjml.index("<mj-body"):]
    section_paddings = set(re.findall(r'<mj-section[^>]*padding="([^"]*)"', body))
    assert section_paddings <= {"8px 0", "24px 0 8px", "24px 0 0", "0 0 8px"}, section_paddings
    assert not re.search(r"<mj-(text|image)[^>]*padding=\"(?!0 24px)", body)
    assert 'style="margin: 0;"' not in body


def test_the_outlook_conditional_comments_are_pinned():
    """MJML's markup for Outlook (ghost tables, DPI settings, the font fallback) is as reviewed.

    If a change to the templates or to mjml-python changes it on purpose, look at
    the difference in Outlook, then write the new file with NEWSLETTER_UPDATE_GOLDEN=1.
    """
    html = sample_html()
    comments = re.findall(r"<!--\[if [^\]]*\]>.*?<!\[endif\]-->", html, flags=re.S)
    assert any(c.startswith("<!--[if mso | IE]>") for c in comments)
    assert any("font-family: Arial" in c for c in comments)
    assert "fonts.googleapis.com" not in html  # no web font: nothing loaded from elsewhere, nothing to fall back from
    golden = GOLDEN / "sample-outlook-comments.html"
    found = "\n".join(comments) + "\n"
    if os.environ.get("NEWSLETTER_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(found, encoding="utf-8")
    assert found == golden.read_text(encoding="utf-8")


# --- in a spam filter ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def spamassassin() -> str:
    path = shutil.which("spamassassin")
    if not path:
        missing("SpamAssassin", "scripts/install-test-services installs Debian's spamassassin")
    return path


@pytest.mark.slow  # starts SpamAssassin
def test_spamassassin_scores_the_message_below_zero(spamassassin, issue_folder, tmp_path):
    build_issue(issue_folder, tmp_path / "out")
    message = (tmp_path / "out" / "sample.eml").read_bytes()
    # -L: local tests only (no DNS or network); -p: a preferences file of our own, not the home folder's.
    report = subprocess.run([spamassassin, "-L", "-t", "-p", str(tmp_path / "user_prefs")], input=message,
                            capture_output=True, timeout=300).stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: (\w+), score=(-?[\d.]+).*?tests=(.*?)\s+autolearn", report,
                       flags=re.M | re.S)
    assert status, report[:2000]
    score, rules = float(status.group(2)), status.group(3)
    assert "HTML_FONT_LOW_CONTRAST" not in rules
    assert score < 0, f"score {score}: {' '.join(rules.split())}"


# --- in `newsletter check` ---------------------------------------------------------------------


def with_publication_lines(tmp_path, *extra: str) -> Path:
    """A copy of the sample whose publication.yaml ends with the given lines; the issue folder."""
    publication = tmp_path / "together-were-better"
    shutil.copytree(SAMPLE_ISSUE.parent.parent, publication)
    yaml = publication / "publication.yaml"
    yaml.write_text(yaml.read_text() + "".join(line + "\n" for line in extra))
    return publication / "issues" / "2021-09"


def check(folder: Path):
    issue = load_issue(folder)
    return check_issue(issue, render_issue(issue))


def test_check_fails_low_contrast_in_either_scheme_and_names_the_pair(tmp_path):
    folder = with_publication_lines(tmp_path, "dark_colours:", '  primary: "#303840"')
    lines = (folder.parent.parent / "publication.yaml").read_text().splitlines()
    problems = [p for p in check(folder) if p.is_error]
    assert {p.where.rsplit("/", 1)[-1] for p in problems} == {f"publication.yaml:{len(lines)}"}
    assert sorted(p.message.split(" has ")[0] for p in problems) == [
        "in the dark scheme, links and headings (#303840 on #1d2023)",
        "in the dark scheme, links in the small print (#303840 on #0b0c0c)",
    ]
    assert all("WCAG AA asks for at least 4.5:1" in p.message for p in problems)
    assert "`primary` or `surface` under `dark_colours:`" in problems[0].fix + problems[1].fix


def test_check_fails_a_header_band_white_text_cannot_be_read_on(tmp_path):
    folder = with_publication_lines(tmp_path)
    yaml = folder.parent.parent / "publication.yaml"
    yaml.write_text(yaml.read_text().replace('primary: "#005eb8"', 'primary: "#8fc3f0"'))
    messages = [p.message for p in check(folder) if p.is_error]
    assert any(m.startswith("in both schemes, the title on the header band (#ffffff on #8fc3f0)") for m in messages)
    assert any(m.startswith("in the light scheme, links and headings (#8fc3f0 on #ffffff)") for m in messages)


def test_check_warns_when_the_logo_file_is_not_twice_the_width_shown(tmp_path):
    folder = with_publication_lines(tmp_path)
    yaml = folder.parent.parent / "publication.yaml"
    yaml.write_text(yaml.read_text().replace("logo_width: 96", "logo_width: 120"))
    problems = check(folder)
    assert [(p.severity, p.where.rsplit("/", 1)[-1]) for p in problems] == [("warning", "publication.yaml:13")]
    assert problems[0].message == ("logo.png is 192 pixels wide and shown 120 wide; "
                                   "it will look soft on high-density screens")
    assert problems[0].fix == "use a file at least 240 pixels wide, or set `logo_width: 96`"


def test_without_logo_width_the_logo_is_shown_at_the_files_own_width(tmp_path):
    folder = with_publication_lines(tmp_path)
    yaml = folder.parent.parent / "publication.yaml"
    yaml.write_text(yaml.read_text().replace("logo_width: 96\n", ""))
    rendered = render_issue(load_issue(folder))
    assert re.search(r'<img alt="Together We&#39;re Better"[^>]*width="192"', rendered.html)
    assert [p.severity for p in check_issue(rendered.issue, rendered)] == ["warning"]
