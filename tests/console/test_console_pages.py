"""Publications, lists and pictures through the console's forms (Flask's test client):
what used to need a terminal. The files written are the ones the CLI reads."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from sqlalchemy import select

from newsletter.authoring.content import PUBLICATION_FILE
from newsletter.store.db import session_scope
from newsletter.store.models import AuditEntry, MailingList, PublicationFile, PublicationRow
from tests.console_world import ADMIN, EDITOR, client_of, form_fields, make_world, post


@pytest.fixture
def database_url(sqlite_url):
    """SQLite only: tests/web/test_browser_console_pages.py takes the same paths on PostgreSQL."""
    return sqlite_url


@pytest.fixture
def world(settings):
    return make_world(settings)


@pytest.fixture
def admin(app):
    return client_of(app, ADMIN)


def png(width=40, height=20, colour=(0, 94, 184)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def stored_file(settings, slug: str, name: str) -> bytes:
    with session_scope(settings) as session:
        row = session.scalars(select(PublicationRow).where(PublicationRow.slug == slug)).one()
        return session.scalars(select(PublicationFile).where(PublicationFile.publication_id == row.id,
                                                             PublicationFile.name == name)).one().data


EDIT = "/console/publications/together-were-better/edit"


# --- publications -------------------------------------------------------------------------------


def test_an_admin_changes_one_field_and_the_file_changes_on_that_line_only(world, admin):
    before = stored_file(world.settings, world.slug, PUBLICATION_FILE).decode()
    fields = form_fields(admin.get(EDIT).get_data(as_text=True), EDIT)
    assert fields["name"] == "Together We're Better" and fields["timezone"] == "Europe/London"
    assert fields["colours-primary"] == "#005eb8"
    response = post(admin, EDIT, {**fields, "from_name": "TWB News", "action": "save"}, page=EDIT)
    assert response.status_code == 303, response.get_data(as_text=True)
    after = stored_file(world.settings, world.slug, PUBLICATION_FILE).decode()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("from_name: Together We're Better", "from_name: TWB News")]
    assert len(before.splitlines()) == len(after.splitlines())  # comments and the sending: example kept
    with session_scope(world.settings) as session:
        row = session.scalars(select(PublicationRow)).one()
        assert row.from_name == "TWB News"
        assert session.scalars(select(AuditEntry.action).where(AuditEntry.action == "changed a publication")).all()


def test_every_problem_comes_back_at_its_field_and_nothing_is_stored(world, admin):
    before = stored_file(world.settings, world.slug, PUBLICATION_FILE)
    fields = form_fields(admin.get(EDIT).get_data(as_text=True), EDIT)
    bad = {**fields, "from_email": "not an address", "web_base_url": "http://news.example.org/",
           "colours-text": "dark grey", "name": "", "action": "save"}
    response = post(admin, EDIT, bad, page=EDIT)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    for field in ("from_email", "web_base_url", "colours-text", "name"):
        assert f'id="f-{field}-error-1"' in html, field
        assert f'href="#f-{field}"' in html, field
    assert 'value="not an address"' in html and 'value="dark grey"' in html  # what was typed is kept
    assert "/tmp" not in html and "/publication-" not in html  # no server paths
    assert stored_file(world.settings, world.slug, PUBLICATION_FILE) == before


def test_contrast_is_checked_without_saving_and_a_faint_colour_is_named(world, admin):
    fields = form_fields(admin.get(EDIT).get_data(as_text=True), EDIT)
    response = post(admin, EDIT, {**fields, "colours-text": "#bbbbbb", "action": "check"}, page=EDIT)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Nothing is saved until you save" in html
    assert "#bbbbbb on #ffffff" in html and "too faint" in html
    assert b"#bbbbbb" not in stored_file(world.settings, world.slug, PUBLICATION_FILE)


def test_a_new_publication_with_logos_is_read_back_by_the_cli_loader(world, admin, tmp_path):
    from newsletter.authoring.content import load_publication

    form = {"slug": "staff-news", "name": "Staff News", "from_email": "staff@example.org",
            "postal_address": "1 Partnership Way, Stafford", "web_base_url": "https://news.example.org/staff/",
            "timezone": "Europe/Dublin", "language": "en-GB", "why_receiving": "You work here.",
            "colours-primary": "#330072", "colours-accent": "#41b6e6", "colours-text": "#212b32",
            "colours-background": "#f0f4f5", "colours-surface": "#ffffff", "logo_alt": "Staff News",
            "logo": (io.BytesIO(png()), "staff.png"), "logo_dark": (io.BytesIO(png(colour=(255, 255, 255))), "staff-dark.png"),
            "action": "save"}
    new = "/console/publications/new"
    response = post(admin, new, form, page=new, content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)
    with session_scope(world.settings) as session:
        row = session.scalars(select(PublicationRow).where(PublicationRow.slug == "staff-news")).one()
        files = {f.name: f.data for f in session.scalars(select(PublicationFile).where(PublicationFile.publication_id == row.id))}
        assert (row.timezone, row.settings["logo_dark"]) == ("Europe/Dublin", "staff-dark.png")
    assert sorted(files) == ["publication.yaml", "staff-dark.png", "staff.png"]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    publication = load_publication(tmp_path / PUBLICATION_FILE)
    assert (publication.slug, publication.colours.primary, publication.logo_dark.name) == ("staff-news", "#330072", "staff-dark.png")
    assert admin.get("/console/publications/staff-news/logo-dark").data == files["staff-dark.png"]
    page = admin.get("/console/publications").get_data(as_text=True)
    assert "Staff News" in page and "Together We&#39;re Better" in page


def test_a_damaged_logo_is_refused_at_its_field_and_the_rest_is_kept(world, admin):
    new = "/console/publications/new"
    form = {"slug": "staff-news", "name": "Staff News", "from_email": "staff@example.org",
            "postal_address": "1 Way", "web_base_url": "https://news.example.org/staff/", "timezone": "Europe/London",
            "logo": (io.BytesIO(b"\x89PNG not really"), "staff.png"), "action": "save"}
    response = post(admin, new, form, page=new, content_type="multipart/form-data")
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and 'id="f-logo-error-1"' in html
    assert 'value="Staff News"' in html and 'value="staff-news"' in html
    with session_scope(world.settings) as session:
        assert session.scalars(select(PublicationRow.slug)).all() == [world.slug]


def test_secrets_are_shown_as_set_or_not_set_and_publications_are_for_admins(world, app, admin, monkeypatch):
    html = admin.get(EDIT).get_data(as_text=True)
    assert "How its mail is sent" in html
    editor = client_of(app, EDITOR)
    assert editor.get("/console/publications").status_code == 403
    assert editor.get(EDIT).status_code == 403
    assert "Publications</a>" not in editor.get("/console/").get_data(as_text=True)


# --- lists ---------------------------------------------------------------------------------------


def test_an_editor_makes_renames_and_describes_a_list_and_gets_its_signup_form(world, app):
    editor = client_of(app, EDITOR)
    new = f"/console/lists/new?publication={world.slug}"
    response = post(editor, "/console/lists/new", {"publication": world.slug, "slug": "Monthly News", "name": ""},
                    page=new)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'id="f-slug-error-1"' in html and 'id="f-name-error-1"' not in html or 'id="f-slug-error-1"' in html
    assert 'value="Monthly News"' in html
    response = post(editor, "/console/lists/new", {"publication": world.slug, "slug": "monthly", "name": "Monthly news",
                                                   "description": "Once a month."}, page=new)
    assert response.status_code == 303
    page_url = response.headers["Location"]
    html = editor.get(page_url).get_data(as_text=True)
    assert f"/subscribe/{world.slug}/monthly" in html
    assert "&lt;form action=&#34;" in html and 'name=&#34;email&#34;' in html  # the snippet, shown as text
    response = post(editor, page_url, {"name": "The monthly letter", "description": "Twelve a year."}, page=page_url)
    assert response.status_code == 303
    with session_scope(world.settings) as session:
        row = session.scalars(select(MailingList).where(MailingList.slug == "monthly")).one()
        assert (row.name, row.description) == ("The monthly letter", "Twelve a year.")
    response = post(editor, page_url, {"name": "", "description": "x"}, page=page_url)
    assert response.status_code == 400 and 'id="f-name-error-1"' in response.get_data(as_text=True)
    # The snippet's form opens the sign-up page with the address filled in.
    signup = app.test_client().get(f"/subscribe/{world.slug}/monthly?email=someone%40example.com")
    assert 'value="someone@example.com"' in signup.get_data(as_text=True)


# --- pictures ------------------------------------------------------------------------------------


def huge_png(width=20_000, height=20_000) -> bytes:
    """A PNG whose header says 20,000 x 20,000 (its pixels are never read)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_picture_is_uploaded_once_and_picked_in_a_section_with_its_description(world, app):
    from tests.console_world import sample_zip, upload

    editor = client_of(app, EDITOR)
    library = f"/console/pictures?publication={world.slug}"
    # Too many pixels is said as such, and what was typed stays in the form.
    response = post(editor, "/console/pictures", {"publication": world.slug, "alt": "A team photo",
                                                   "image": (io.BytesIO(huge_png()), "team.png")},
                    page=library, content_type="multipart/form-data")
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and "too many pixels" in html and "damaged" not in html
    assert 'id="f-image-error-1"' in html and 'value="A team photo"' in html
    response = post(editor, "/console/pictures", {"publication": world.slug, "alt": "",
                                                   "image": (io.BytesIO(png()), "team.png")},
                    page=library, content_type="multipart/form-data")
    assert response.status_code == 400 and 'id="f-alt-error-1"' in response.get_data(as_text=True)
    response = post(editor, "/console/pictures", {"publication": world.slug, "alt": "The team at the Pride stall",
                                                   "image": (io.BytesIO(png(320, 200)), "team.png")},
                    page=library, content_type="multipart/form-data")
    assert response.status_code == 303
    html = editor.get(library).get_data(as_text=True)
    thumb = re.search(r'src="(/console/pictures/\d+/thumbnail.png)"', html)[1]
    with Image.open(io.BytesIO(editor.get(thumb).data)) as small:
        assert max(small.size) <= 160

    assert upload(editor, sample_zip()).status_code == 303
    section = "/console/issues/1/sections/05-vaccination-chart.md"
    html = editor.get(section).get_data(as_text=True)
    assert 'name="src--pick" value="team.png"' in html
    fields = form_fields(html, section) | {"src--pick": "team.png", "alt": ""}
    assert post(editor, section, fields, page=section).status_code == 303
    from newsletter.store.models import DraftFile

    with session_scope(world.settings) as session:
        saved = session.scalars(select(DraftFile).where(DraftFile.name == "05-vaccination-chart.md")).one().data.decode()
        copied = session.scalars(select(DraftFile).where(DraftFile.name == "team.png")).one_or_none()
    assert "src: team.png" in saved and 'alt: "The team at the Pride stall"' in saved  # its quotes kept
    assert copied is not None  # the folder holds it, so its download passes `newsletter check`
