"""The comms console through its forms (Flask's test client): creating issues,
editing sections, conflicting saves, the zip round trip, bad uploads, the
approval flow, role boundaries, scheduling and results."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.store.models import AuditEntry, Draft, DraftFile, Send
from newsletter.web import create_app
from tests.console_world import (
    ADMIN, APPROVER, EDITOR, OPERATOR, csrf_of, log_in, make_world, post, sample_zip, upload,
)


@pytest.fixture
def world(settings):
    return make_world(settings, subscribers=3)


@pytest.fixture
def app(world):
    return create_app(world.settings)


def client_of(app, email):
    client = app.test_client()
    assert log_in(client, email).status_code == 303
    return client


@pytest.fixture
def editor(app):
    return client_of(app, EDITOR)


def the_draft(settings) -> Draft:
    with session_scope(settings) as session:
        return session.scalars(select(Draft)).one()


def file_text(settings, name: str) -> str:
    with session_scope(settings) as session:
        return session.scalars(select(DraftFile).where(DraftFile.name == name)).one().data.decode()


def test_upload_the_sample_issue_and_see_it_checked_and_previewed(world, editor):
    response = upload(editor, sample_zip(), publication_id=world.publication_id)
    assert response.status_code == 303, response.get_data(as_text=True)
    draft = the_draft(world.settings)
    assert (draft.slug, draft.state, draft.errors) == ("2021-09", "draft", 0)
    page = editor.get(response.headers["Location"]).get_data(as_text=True)
    assert "Left out (not section files or pictures): make_chart.py" in page
    assert "Send for approval" in page and "ICS Core Priorities" in page

    email = editor.get(f"/console/issues/{draft.id}/preview/email").get_data(as_text=True)
    assert "Frailty: Healthy Ageing and Frailty Strategy" in email
    assert "%%" not in email  # filled in for the sample reader, as the sample message is
    assert f"/console/issues/{draft.id}/preview/web/images/vaccinations.png" in email
    image = editor.get(f"/console/issues/{draft.id}/preview/web/images/vaccinations.png")
    assert image.status_code == 200 and image.data.startswith(b"\x89PNG")
    dark = editor.get(f"/console/issues/{draft.id}/preview/email?scheme=dark&images=off").get_data(as_text=True)
    assert "invert(1)" in dark  # as phone apps show an email in dark mode
    assert "<img" in dark and not re.search(r"<img[^>]*\ssrc=", dark)  # pictures off: alt text only
    text = editor.get(f"/console/issues/{draft.id}/preview/text").get_data(as_text=True)
    assert "Frailty: Healthy Ageing and Frailty Strategy" in text and "<table" not in text
    web = editor.get(f"/console/issues/{draft.id}/preview/web/")
    assert web.status_code == 200 and "System Savings" in web.get_data(as_text=True)
    article = editor.get(f"/console/issues/{draft.id}/preview/web/system-savings/")
    assert article.status_code == 200 and "£200 million" in article.get_data(as_text=True)
