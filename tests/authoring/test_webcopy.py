"""write_site: public pages with no personal data, an archive newest first, an Atom feed."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import date

import pytest

from newsletter.authoring.checks import WORST_CASE_VALUES
from newsletter.authoring.render import render_issue
from newsletter.authoring.webcopy import write_site
from tests.authoring.example_issue import make_issue

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
def two_issues(tmp_path):
    september = make_issue(tmp_path / "2021-09")
    october = replace(make_issue(tmp_path / "2021-10"), slug="2021-10", title="Example Monthly: October",
                      issue_date=date(2021, 10, 1))
    # Both belong to the same publication.
    october = replace(october, publication=september.publication)
    return [render_issue(september), render_issue(october)]


@pytest.fixture
def site(tmp_path, two_issues):
    return write_site(tmp_path / "out", two_issues[0].issue.publication, two_issues)


def test_every_page_and_picture_is_written(site):
    for relative in ("index.html", "feed.xml", "2021-09/index.html", "2021-09/healthy-ageing/index.html",
                     "2021-09/images/chart.png", "2021-09/images/logo.png", "2021-10/index.html"):
        assert (site / relative).is_file(), relative
    assert site.name == "example-news"


def test_the_archive_lists_issues_newest_first(site):
    archive = (site / "index.html").read_text()
    links = re.findall(r'<a href="(\d{4}-\d\d/)">([^<]+)</a>', archive)
    assert links == [("2021-10/", "Example Monthly: October"), ("2021-09/", "Example Monthly")]


def test_the_feed_has_one_entry_per_issue_linking_to_its_page(site, two_issues):
    feed = ET.fromstring((site / "feed.xml").read_bytes())
    assert feed.findtext(f"{ATOM}title") == "Example News"
    entries = [(e.findtext(f"{ATOM}title"), e.find(f"{ATOM}link").get("href")) for e in feed.iter(f"{ATOM}entry")]
    assert entries == [
        ("Example Monthly: October", "https://news.example.org/example-news/2021-10/"),
        ("Example Monthly", "https://news.example.org/example-news/2021-09/"),
    ]


def test_pages_are_accessible_and_need_no_javascript(site):
    for page in ("index.html", "2021-09/index.html", "2021-09/healthy-ageing/index.html"):
        content = (site / page).read_text()
        assert '<html lang="en-GB">' in content, page
        assert "<main" in content and "<header" in content and "<footer" in content, page
        assert len(re.findall(r"<h1[ >]", content)) == 1, page
        assert "<script" not in content, page
        assert all(re.search(r'\balt="', tag) for tag in re.findall(r"<img [^>]*>", content)), page


def test_the_web_copy_holds_no_placeholder_or_personal_data(site):
    for path in site.rglob("*.html"):
        content = path.read_text()
        assert "%%" not in content, path
        assert "unsubscribe" not in content.lower(), path
        assert "preferences" not in content.lower(), path
        for value in WORST_CASE_VALUES.values():
            assert value not in content, path
    issue_page = (site / "2021-09" / "index.html").read_text()
    assert "Dear reader," in issue_page  # the letter's %%name%% greeting, made public
    assert "in your inbox?" in issue_page  # a sign-up hint instead


def test_pages_link_to_the_archive_and_articles_back_to_the_issue(site):
    issue_page = (site / "2021-09" / "index.html").read_text()
    article = (site / "2021-09" / "healthy-ageing" / "index.html").read_text()
    assert '<a href="../">All issues of Example News</a>' in issue_page
    assert '<a href="healthy-ageing/">Read more' in issue_page
    assert '<a href="../">Back to Example Monthly</a>' in article


def test_the_public_pages_point_readers_to_the_sign_up_page(tmp_path, two_issues):
    signup = "https://news.example.org/subscribe/example/monthly"
    publication = replace(two_issues[0].issue.publication, signup_url=signup)
    rendered = [render_issue(replace(r.issue, publication=publication)) for r in two_issues]
    site = write_site(tmp_path / "with-signup", publication, rendered)
    archive = (site / "index.html").read_text()
    assert f'<a href="{signup}">Sign up here</a>' in archive


def test_without_a_sign_up_page_they_suggest_an_email(site, two_issues):
    reply_to = two_issues[0].issue.publication.reply_to
    archive = (site / "index.html").read_text()
    assert f"mailto:{reply_to}?subject=Subscribe" in archive and "Sign up here" not in archive
