"""A publication with people in every role, for the console's tests."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from newsletter.accounts import admins
from newsletter.console.drafts import store_publication_files
from newsletter.authoring.content import load_publication
from newsletter.store.publications import sync_publication
from newsletter.store.db import session_scope
from newsletter.store.models import Draft
from newsletter.audience.subscribers import add_subscriber, create_list
from tests.conftest import SAMPLE_ISSUE
from tests.passwords import quick_hashes

PASSWORD = "correct horse battery staple"
ADMIN, EDITOR, APPROVER, OPERATOR = ("admin@example.org", "editor@example.org", "approver@example.org",
                                     "operator@example.org")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PUBLICATION_FOLDER = SAMPLE_ISSUE.parent.parent


@dataclass
class World:
    settings: object
    publication_id: int
    slug: str


def make_world(settings, subscribers: int = 0) -> World:
    """The sample publication as `newsletter publications add` records it, an admin, one
    account per role, and a list with ``subscribers`` confirmed readers."""
    publication = load_publication(PUBLICATION_FOLDER / "publication.yaml")
    # The accounts' passwords are quick to check (tests/passwords.py): a console test logs in several times.
    with session_scope(settings) as session, quick_hashes():
        row = sync_publication(session, publication)
        store_publication_files(session, row, PUBLICATION_FOLDER)
        admins.create_admin(session, ADMIN, PASSWORD)
        for email, roles in ((EDITOR, ["editor"]), (APPROVER, ["approver"]), (OPERATOR, ["operator"])):
            account = admins.invite_account(session, email, row.id, roles)
            admins.set_password(session, account, PASSWORD)
        create_list(session, publication.slug, "everyone", "Everyone")
        for n in range(subscribers):
            add_subscriber(session, f"reader{n:03d}@example.com", lists=["everyone"], publication_slug=publication.slug)
        return World(settings, row.id, publication.slug)


def sample_zip(folder: Path = SAMPLE_ISSUE, prefix: str = "2021-09/") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                archive.write(path, prefix + path.name)
    return out.getvalue()


def csrf_of(client, path: str) -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def log_in(client, email: str, password: str = PASSWORD):
    token = csrf_of(client, "/console/login")
    return client.post("/console/login", data={"email": email, "password": password, "csrf_token": token,
                                               "next": "/console/"})


def post(client, path: str, data: dict | None = None, page: str | None = None, **kwargs):
    """A form post with the CSRF token of the page it is on."""
    token = csrf_of(client, page or "/console/")
    return client.post(path, data={"csrf_token": token, **(data or {})}, **kwargs)


def upload(client, data: bytes, name: str = "2021-09.zip", slug: str = "", publication_id: int = 1):
    return post(client, "/console/new", {"how": "zip", "publication": str(publication_id), "slug": slug,
                                         "zip": (io.BytesIO(data), name)}, page="/console/new",
                content_type="multipart/form-data")


def form_fields(html: str, action: str) -> dict[str, str]:
    """What a browser would post from the form with this action: inputs, checked boxes, text areas,
    the chosen option of each select."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.inside, self.fields, self.area, self.select = False, {}, None, None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "form":
                self.inside = a.get("action") == action
            elif self.inside and tag == "input" and a.get("name") and a.get("type") != "submit":
                if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                    return
                self.fields[a["name"]] = a.get("value", "")
            elif self.inside and tag == "textarea":
                self.area = a["name"]
                self.fields[self.area] = ""
            elif self.inside and tag == "select":
                self.select = a.get("name")
            elif self.select and tag == "option" and ("selected" in a or self.select not in self.fields):
                self.fields[self.select] = a.get("value", "")

        def handle_endtag(self, tag):
            if tag == "form":
                self.inside = False
            elif tag == "textarea":
                self.area = None
            elif tag == "select":
                self.select = None

        def handle_data(self, data):
            if self.area:
                self.fields[self.area] += data

    reader = Reader()
    reader.convert_charrefs = True
    reader.feed(html)
    for name, value in reader.fields.items():
        if value.startswith("\n"):  # HTML drops the newline right after <textarea>
            reader.fields[name] = value[1:]
    return reader.fields


def client_of(app, email: str):
    """A test client of ``app``, logged in as ``email``."""
    client = app.test_client()
    assert log_in(client, email).status_code == 303
    return client


def the_draft(settings) -> Draft:
    """The one draft in the database."""
    with session_scope(settings) as session:
        return session.scalars(select(Draft)).one()


def press(client, draft_id: int, step: str, data: dict | None = None):
    """A step's button on the issue's page (submit, approve, ...), as the page posts it."""
    return post(client, f"/console/issues/{draft_id}/{step}", data, page=f"/console/issues/{draft_id}")
