"""The console's "How mail is sent" page: each publication an account works on,
its transport, account and link address, and its secrets as set or not set, never
their values; a publication the account has no role in is not shown."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from newsletter.authoring.sending_block import SecretRef, SendingBlock
from newsletter.accounts import admins
from newsletter.store.db import session_scope
from newsletter.store.models import PublicationRow
from newsletter.web import create_app
from tests.passwords import quick_hashes
from tests.console_world import ADMIN, EDITOR, PASSWORD, log_in, make_world

OUTSIDER = "outsider@example.org"  # an editor of another publication only


@pytest.fixture
def world(settings, publication_row):
    world = make_world(settings, subscribers=1)
    block = SendingBlock(base_url="https://news.example.org", transport="sendgrid", account="partnership-sendgrid",
                         secrets=(("sendgrid_api_key", SecretRef("sending.sendgrid.api_key_env", env="TWB_SG_KEY")),))
    with session_scope(settings) as session, quick_hashes():
        session.execute(update(PublicationRow).where(PublicationRow.slug == world.slug).values(sending=block.to_json()))
        other = publication_row(session, slug="other", name="Other Times", from_name="Other",
                                from_email="news@other.example", reply_to="news@other.example",
                                postal_address="1 Other Street", web_base_url="https://other.example/")
        account = admins.invite_account(session, OUTSIDER, other.id, ["editor"])
        admins.set_password(session, account, PASSWORD)
    return world


def page_for(world, email: str) -> str:
    client = create_app(world.settings).test_client()
    assert log_in(client, email).status_code == 303
    response = client.get("/console/sending")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_an_editor_sees_how_their_publication_sends_and_whether_its_secret_is_set(world, monkeypatch):
    monkeypatch.setenv("TWB_SG_KEY", "SG.the-real-key")
    page = page_for(world, EDITOR)
    assert "sendgrid" in page and "partnership-sendgrid" in page and "https://news.example.org" in page
    assert "$TWB_SG_KEY: set" in page
    assert "SG.the-real-key" not in page  # never the value
    assert "Other Times" not in page  # not a publication this editor works on

    monkeypatch.delenv("TWB_SG_KEY")
    assert "$TWB_SG_KEY: not set" in page_for(world, EDITOR)


def test_each_account_sees_only_the_publications_it_works_on(world):
    outsider = page_for(world, OUTSIDER)
    assert "Other Times" in outsider and "partnership-sendgrid" not in outsider
    admin = page_for(world, ADMIN)
    assert "Other Times" in admin and "partnership-sendgrid" in admin


def test_the_navigation_links_the_page(world):
    client = create_app(world.settings).test_client()
    log_in(client, EDITOR)
    assert 'href="/console/sending"' in client.get("/console/").get_data(as_text=True)


def test_a_real_send_from_the_console_names_links_subscribers_could_not_follow(world):
    """The schedule step's check: loopback links are refused for SMTP, not for the outbox folder."""
    from dataclasses import replace

    from newsletter.sending.links import refused_links
    from newsletter.store.publications import settings_for

    def link_refusals(settings, row):  # what the schedule form shows, and scheduling refuses
        return refused_links(row, settings_for(settings, row))

    with session_scope(world.settings) as session:
        row = session.query(PublicationRow).filter_by(slug="other").one()
        over_smtp = replace(world.settings, transport="smtp", base_url="http://127.0.0.1:8000")
        refused = link_refusals(over_smtp, row)
        assert [p.where for p in refused] == ["publication 'other', sending.base_url"]
        assert "would not work for subscribers" in refused[0].message
        assert link_refusals(replace(over_smtp, transport="outbox"), row) == []
        assert link_refusals(replace(over_smtp, base_url="https://news.example.org"), row) == []
