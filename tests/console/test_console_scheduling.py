"""Scheduling from the console: one send to all the ticked lists, each person
once, through the same function as `newsletter schedule`; people an earlier send
of the issue reached are left out unless the "send again" box is ticked."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from newsletter.audience.subscribers import add_subscriber, create_list
from newsletter.sending import scheduling, send_record
from newsletter.sending.lifecycle import claim_due_sends
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Send, Subscriber
from tests.conftest import SAMPLE_ISSUE
from tests.console_world import APPROVER, EDITOR, client_of, make_world, post, sample_zip, upload

SLUG = "together-were-better"


@pytest.fixture
def world(settings):
    """Six people on "everyone"; "board" has two of them and one person of its own."""
    world = make_world(settings)
    with session_scope(settings) as session:
        create_list(session, SLUG, "board", "Board")
        for n in range(6):
            lists = ["everyone", "board"] if n < 2 else ["everyone"]
            add_subscriber(session, f"reader{n}@example.org", lists=lists, publication_slug=SLUG)
        add_subscriber(session, "trustee@example.org", lists=["board"], publication_slug=SLUG)
    return world


@pytest.fixture
def approved(world, app):
    from newsletter.store.models import Draft

    editor = client_of(app, EDITOR)
    upload(editor, sample_zip(), publication_id=world.publication_id)
    with session_scope(world.settings) as session:
        draft_id = session.scalars(select(Draft.id)).one()
    page = f"/console/issues/{draft_id}"
    assert post(editor, f"{page}/submit", page=page).status_code == 303
    assert post(client_of(app, APPROVER), f"{page}/approve", page=page).status_code == 303
    return editor, page


def frozen(settings) -> dict[str, int]:
    """Each frozen address and how many ledger rows it has, over every send."""
    with session_scope(settings) as session:
        claim_due_sends(session, settings)
    with session_scope(settings) as session:
        return dict(session.execute(select(Delivery.email, func.count()).group_by(Delivery.email)).all())


def test_two_overlapping_lists_ticked_make_one_send_and_one_copy_each(world, approved):
    editor, page = approved
    form = editor.get(f"{page}/schedule?lists=everyone&lists=board").get_data(as_text=True)
    assert "<strong>7 recipients</strong>" in form  # the two on both lists counted once

    assert post(editor, f"{page}/schedule", {"lists": ["everyone", "board"], "when": "now"}, page=page).status_code == 303

    with session_scope(world.settings) as session:
        [send] = session.scalars(select(Send)).all()
        assert send_record.list_labels(session, [send.id]) == {send.id: "everyone, board"}
    copies = frozen(world.settings)
    assert copies == {**{f"reader{n}@example.org": 1 for n in range(6)}, "trustee@example.org": 1}
    results = editor.get(f"{page}/results").get_data(as_text=True)
    assert "Everyone, Board" in results


def test_the_console_and_the_command_line_schedule_through_one_function_and_one_ledger(world, approved, cli,
                                                                                        monkeypatch):
    calls = []
    real = scheduling.schedule_issue

    def spy(*args, **kwargs):
        calls.append(kwargs.get("resend"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scheduling, "schedule_issue", spy)
    editor, page = approved

    # The command line sends the issue to "everyone" first.
    result = cli("schedule", SAMPLE_ISSUE, "--list", "everyone", "--now")
    assert result.exit_code == 0, result.output
    assert frozen(world.settings) == {f"reader{n}@example.org": 1 for n in range(6)}

    # The console, to both lists: only the trustee had not had it.
    form = editor.get(f"{page}/schedule?lists=everyone&lists=board").get_data(as_text=True)
    assert "6 of them already had this issue from an earlier send" in form
    assert 'name="resend"' in form
    response = post(editor, f"{page}/schedule", {"lists": ["everyone", "board"], "when": "now"}, page=page)
    assert response.status_code == 303
    shown = editor.get(page).get_data(as_text=True)
    assert "6 of its 7 recipients already had this issue from an earlier send and are left out" in shown
    assert frozen(world.settings) == {**{f"reader{n}@example.org": 1 for n in range(6)}, "trustee@example.org": 1}
    assert calls == [False, False]

    # Asked for explicitly, a resend from the command line reaches everyone on "board" again.
    again = cli("schedule", SAMPLE_ISSUE, "--list", "board", "--now", "--resend")
    assert again.exit_code == 0, again.output
    assert "3 of its 3 recipients already had this issue from an earlier send and get it again" in again.output
    copies = frozen(world.settings)
    assert copies == {"reader0@example.org": 2, "reader1@example.org": 2, "trustee@example.org": 2,
                      **{f"reader{n}@example.org": 1 for n in range(2, 6)}}
    assert calls == [False, False, True]
    listed = cli("sends", "list", "--all").output
    assert "everyone, board" in listed


def test_the_send_again_box_makes_a_resend(world, approved, cli):
    editor, page = approved
    assert cli("schedule", SAMPLE_ISSUE, "--list", "board", "--now").exit_code == 0
    frozen(world.settings)
    response = post(editor, f"{page}/schedule", {"lists": ["board"], "when": "now", "resend": "yes"}, page=page)
    assert response.status_code == 303
    assert frozen(world.settings) == {"reader0@example.org": 2, "reader1@example.org": 2, "trustee@example.org": 2}
    with session_scope(world.settings) as session:
        assert session.scalar(select(func.count()).select_from(Delivery).where(Delivery.resend)) == 3
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 7
