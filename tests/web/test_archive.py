"""The web copy served by the app: archive, feed, issue and article pages, images."""

from __future__ import annotations

from dataclasses import replace
from xml.etree import ElementTree

import pytest
from markupsafe import escape

from newsletter.config import settings_from
from newsletter.authoring.content import load_issue
from newsletter.authoring.render import render_issue
from newsletter.store.db import session_scope
from newsletter.store.issues import store_issue
from newsletter.audience.subscribers import add_subscriber, create_list
from newsletter.web import create_app
from newsletter.authoring.webcopy import write_site
from tests.conftest import SAMPLE_ISSUE

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture(scope="module")
def rendered():
    issue = load_issue(SAMPLE_ISSUE)
    publication = replace(issue.publication, web_base_url=f"https://newsletter.example.org/{issue.publication.slug}/")
    return render_issue(replace(issue, publication=publication))


@pytest.fixture
def site(tmp_path, sqlite_url, rendered, migrate):
    settings = replace(settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path / "var")}), database_url=sqlite_url,
                       secret_keys=("archive-test-key",), base_url="https://newsletter.example.org",
                       web_copy_dir=tmp_path / "web")
    migrate(settings.effective_database_url)
    write_site(settings.web_copy_dir, rendered.issue.publication, [rendered])
    with session_scope(settings) as session:
        store_issue(session, rendered)
        create_list(session, rendered.issue.publication.slug, "news", "Monthly news")
        add_subscriber(session, "private.person@example.com", "Private Person", ["news"],
                       publication_slug=rendered.issue.publication.slug)
    return settings, create_app(settings).test_client()


def paths(rendered):
    pub, issue = rendered.issue.publication.slug, rendered.issue.slug
    return pub, issue, f"/{pub}/", f"/{pub}/{issue}/"


def test_the_archive_lists_every_stored_issue_and_links_to_it(site, rendered):
    _settings, client = site
    pub, issue, archive, _issue_page = paths(rendered)
    response = client.get(archive)
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert f'<a href="{issue}/">{escape(rendered.issue.title)}</a>' in html
    assert f'<html lang="{rendered.issue.publication.language}">' in html
    assert response.headers["Cache-Control"] == "public, max-age=300"


def test_the_issue_and_its_articles_are_the_stored_web_copy(site, rendered):
    _settings, client = site
    _pub, _issue, _archive, issue_page = paths(rendered)

    assert client.get(issue_page).get_data(as_text=True) == rendered.web_pages["index.html"]
    articles = [name for name in rendered.web_pages if name != "index.html"]
    assert articles, "the sample issue has article pages"
    for name in articles:
        response = client.get(issue_page + name.removesuffix("index.html"))
        assert response.status_code == 200
        assert response.get_data(as_text=True) == rendered.web_pages[name]


def test_the_pictures_the_pages_use_are_served(site, rendered):
    _settings, client = site
    _pub, _issue, _archive, issue_page = paths(rendered)
    assert rendered.images
    for name, source in rendered.images.items():
        response = client.get(issue_page + name)
        assert response.status_code == 200
        assert response.data == source.read_bytes()
        assert response.mimetype.startswith("image/")


def test_the_feed_is_atom_with_an_entry_per_issue(site, rendered):
    _settings, client = site
    pub, issue, archive, _issue_page = paths(rendered)
    response = client.get(f"{archive}feed.xml")

    assert response.status_code == 200 and response.mimetype == "application/atom+xml"
    feed = ElementTree.fromstring(response.data)
    [entry] = feed.findall(f"{ATOM}entry")
    assert entry.find(f"{ATOM}title").text == rendered.issue.title
    assert entry.find(f"{ATOM}link").get("href") == f"https://newsletter.example.org/{pub}/{issue}/"


def test_no_page_holds_a_subscribers_data(site, rendered):
    _settings, client = site
    _pub, _issue, archive, issue_page = paths(rendered)
    pages = [archive, f"{archive}feed.xml", issue_page] + [
        issue_page + name.removesuffix("index.html") for name in rendered.web_pages if name != "index.html"]
    for path in pages:
        body = client.get(path).get_data(as_text=True)
        assert "private.person" not in body and "Private Person" not in body
        assert "%%" not in body  # no placeholder left for anyone's data


@pytest.mark.parametrize("path", [
    "/no-such-publication/", "/together-were-better/1999-01/", "/together-were-better/2021-09/no-such-article/",
    "/together-were-better/2021-09/images/missing.png", "/together-were-better/2021-09/images/../../../secret-key",
    "/together-were-better/2021-09/images/%2e%2e/%2e%2e/%2e%2e/var/secret-key", "/no-such-publication/feed.xml",
])
def test_anything_else_is_a_404_page(site, path):
    _settings, client = site
    response = client.get(path)
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)


def test_every_top_level_path_of_the_app_is_reserved_from_publications(settings):
    from newsletter.authoring.content import RESERVED_PUBLICATION_SLUGS
    from newsletter.web import create_app

    app = create_app(settings)
    first_segments = {
        rule.rule.strip("/").split("/")[0] for rule in app.url_map.iter_rules() if not rule.rule.startswith("/<")
    }
    assert first_segments - {""} <= RESERVED_PUBLICATION_SLUGS
