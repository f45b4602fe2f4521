"""Segments in the console: the form writes the CLI's condition text, shows the
audience count and ten sample subscribers, puts the library's errors next to
the row they come from, saves by name; the list of segments, and a segment's
download."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import select

from newsletter.audience.segments import get_segment
from newsletter.audience.subscribers import add_subscriber, create_list
from newsletter.console.segment_form import Rule, condition_text
from newsletter.store.db import session_scope
from newsletter.store.models import Segment
from tests.console_world import APPROVER, EDITOR, client_of, csrf_of, log_in, make_world

SLUG = "together-were-better"


@pytest.fixture
def world(settings):
    world = make_world(settings)
    with session_scope(settings) as session:
        create_list(session, SLUG, "board", "Board")
        for n in range(14):
            add_subscriber(session, f"clerk{n:02d}@example.org", name=f"Clerk {n}", lists=["everyone"],
                           publication_slug=SLUG, attributes={"organisation": "Stoke-on-Trent City Council",
                                                              "job title": "Clerk"})
        add_subscriber(session, "chair@example.org", name="Chair", lists=["everyone", "board"], publication_slug=SLUG,
                       attributes={"organisation": "Stoke-on-Trent City Council"})
        add_subscriber(session, "other@example.org", name="=cmd|' /C calc'!A0", lists=["everyone"],
                       publication_slug=SLUG, attributes={"organisation": "Elsewhere"})
    return world


def submit(client, rules: list[tuple[str, str, str]], do: str = "preview", join: str = "and", name: str = ""):
    token = csrf_of(client, f"/console/segments/new?publication={SLUG}")
    return client.post("/console/segments/new", data={
        "csrf_token": token, "publication": SLUG, "join": join, "name": name, "do": do,
        "field": [r[0] for r in rules], "operator": [r[1] for r in rules], "value": [r[2] for r in rules]})


def test_the_form_writes_the_condition_the_cli_takes():
    text, starts = condition_text([Rule("organisation", "is", 'Stoke "City"'), Rule("job title", "is not empty"),
                                   Rule("joined", "after", "2024-01-01"), Rule("list", "not in list", "board")], "and")
    assert text == ('organisation is "Stoke \\"City\\"" and [job title] is not empty and joined after 2024-01-01 '
                    'and not in list board')
    assert [text[s - 1:].split()[0] for s in starts] == ["organisation", "[job", "joined", "not"]


def test_count_and_ten_samples_then_save(world, editor):
    rules = [("organisation", "is", "stoke-on-trent city council"), ("list", "not in list", "board")]
    response = submit(editor, rules)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'organisation is &#34;stoke-on-trent city council&#34; and not in list board' in page
    assert re.search(r'data-field="count">14<', page)
    assert page.count("@example.org</td>") == 10 and "chair@example.org" not in page

    response = submit(editor, rules, do="save", name="council-staff")
    assert response.status_code == 303
    with session_scope(world.settings) as session:
        segment = get_segment(session, SLUG, "council-staff")
        assert segment.condition == 'organisation is "stoke-on-trent city council" and not in list board'
    listing = editor.get(response.headers["Location"]).get_data(as_text=True)
    assert "Segment council-staff saved" in listing
    with session_scope(world.settings) as session:
        from newsletter.store.models import AuditEntry

        assert session.scalars(select(AuditEntry.action).where(AuditEntry.actor == EDITOR)).all()[-1] == "saved a segment"
    row = re.search(r'<tr data-segment="council-staff">.*?</tr>', listing, re.S).group(0)
    assert '<td class="n" data-label="Audience now">14</td>' in row


@pytest.mark.parametrize("rules, row, message", [
    ([("name", "is", "x"), ("joined", "contains", "2024")], 1, "&#39;contains&#39; makes no sense for joined (a date)"),
    ([("joined", "after", "yesterday")], 0, "joined is a date, and yesterday is not one"),
    ([("name", "is", "x"), ("list", "in list", "nobody")], 1, "has no list &#39;nobody&#39;"),
    ([("shoe size", "is", "9")], 0, "unknown field &#39;shoe size&#39;: no subscriber has it"),
    ([("name", "in list", "board")], 0, "list membership takes the field list"),
])
def test_a_bad_condition_gets_the_librarys_error_next_to_its_row(world, editor, rules, row, message):
    response = submit(editor, rules)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    error = re.search(rf'<p class="error" id="error-{row}">(.*?)</p>', page, re.S)
    assert error and message in error.group(1), page
    assert f'id="field-{row}" name="field" aria-describedby="error-{row}" aria-invalid="true"' in page


def test_a_bad_name_is_refused_and_nothing_saved(world, editor):
    response = submit(editor, [("name", "contains", "clerk")], do="save", name="Council Staff!")
    assert response.status_code == 400
    assert "cannot name a segment" in response.get_data(as_text=True)
    with session_scope(world.settings) as session:
        assert session.scalars(select(Segment)).all() == []


def test_or_joins_the_rules(world, editor):
    page = submit(editor, [("email", "starts with", "chair"), ("email", "starts with", "other")], join="or").get_data(
        as_text=True)
    assert re.search(r'data-field="count">2<', page)


def test_a_segment_downloads_as_csv_with_formulas_neutralised(world, editor):
    submit(editor, [("organisation", "is", "Elsewhere")], do="save", name="elsewhere")
    response = editor.get(f"/console/segments/elsewhere/export.csv?publication={SLUG}")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["email", "name", "lists", "organisation"]  # the custom fields its people have
    assert rows[1:] == [["other@example.org", "'=cmd|' /C calc'!A0", "everyone", "Elsewhere"]]
    assert editor.get(f"/console/segments/nothing/export.csv?publication={SLUG}").status_code == 404


def test_approvers_see_segments_but_do_not_build_them(world, app):
    approver = app.test_client()
    log_in(approver, APPROVER)
    page = approver.get("/console/audience").get_data(as_text=True)
    assert "Segments" in page and "New segment" not in page and "Download as CSV" not in page
    assert approver.get(f"/console/segments/new?publication={SLUG}").status_code == 403


@pytest.fixture
def approved(world, app, editor):
    from tests.console_world import press, sample_zip, the_draft, upload

    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft_id = the_draft(world.settings).id
    assert press(editor, draft_id, "submit").status_code == 303
    assert press(client_of(app, APPROVER), draft_id, "approve").status_code == 303
    return draft_id


def test_schedule_an_issue_to_a_segment_after_seeing_its_count_and_ten_of_them(world, editor, approved):
    from newsletter.sending.lifecycle import claim_due_sends
    from newsletter.store.models import Delivery, Send, Subscriber
    from tests.console_world import post

    submit(editor, [("email", "starts with", "clerk0")], do="save", name="first-clerks")
    page = f"/console/issues/{approved}"
    form = editor.get(f"{page}/schedule?segment=first-clerks&lists=everyone").get_data(as_text=True)
    assert "segment first-clerks" in form and "<strong>10 recipients</strong>" in form
    assert form.count("@example.org</td>") == 10 and "clerk10@example.org" not in form
    assert '<input type="hidden" name="segment" value="first-clerks">' in form
    response = post(editor, f"{page}/schedule", {"lists": "everyone", "segment": "first-clerks", "when": "at",
                                                  "at": "2099-01-07 09:00"}, page=page)
    assert response.status_code == 303
    assert "Scheduled to everyone (segment first-clerks)" in editor.get(page).get_data(as_text=True)
    assert "It goes to <strong>10 recipients</strong>" in editor.get(f"{page}/confirm/send-now").get_data(as_text=True)
    assert post(editor, f"{page}/send-now", page=page).status_code == 303
    with session_scope(world.settings) as session:
        [send] = session.scalars(select(Send)).all()
        assert send.segment_name == "first-clerks"
        claim_due_sends(session, world.settings)
    with session_scope(world.settings) as session:
        frozen = session.scalars(select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)).all()
    assert sorted(frozen) == [f"clerk{n:02d}@example.org" for n in range(10)]
