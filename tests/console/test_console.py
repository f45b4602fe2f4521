"""The comms console through its forms (Flask's test client): creating issues,
editing sections, conflicting saves, the zip round trip, bad uploads, the
approval flow, role boundaries, scheduling and results."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.store.models import AuditEntry, Draft, DraftFile, Send, SendEvent
from tests.conftest import SAMPLE_ISSUE
from tests.console_world import (
    ADMIN, APPROVER, EDITOR, OPERATOR, client_of, csrf_of, form_fields, log_in, make_world, post, press, sample_zip, the_draft,
    upload,
)


@pytest.fixture
def world(settings):
    return make_world(settings, subscribers=3)


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
    # The email's own dark styles, unconditional in the dark preview; the light one keeps the condition.
    assert re.search(r"@media \(prefers-color-scheme: dark\)", email)
    assert "prefers-color-scheme: dark" not in dark and "@media all" in dark
    assert "<img" in dark and not re.search(r"<img[^>]*\ssrc=", dark)  # pictures off: alt text only
    text = editor.get(f"/console/issues/{draft.id}/preview/text").get_data(as_text=True)
    assert "Frailty: Healthy Ageing and Frailty Strategy" in text and "<table" not in text
    web = editor.get(f"/console/issues/{draft.id}/preview/web/")
    assert web.status_code == 200 and "System Savings" in web.get_data(as_text=True)
    article = editor.get(f"/console/issues/{draft.id}/preview/web/system-savings/")
    assert article.status_code == 200 and "£200 million" in article.get_data(as_text=True)


def open_section(client, draft_id: int, name: str) -> tuple[str, dict]:
    path = f"/console/issues/{draft_id}/sections/{name}"
    html = client.get(path).get_data(as_text=True)
    return html, form_fields(html, path)


def test_edit_a_teaser_break_a_link_see_the_finding_point_at_the_field_then_fix_it(world, editor):
    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft = the_draft(world.settings)
    path = f"/console/issues/{draft.id}/sections/02-priorities.md"
    _html, fields = open_section(editor, draft.id, "02-priorities.md")
    assert fields["items-0-heading"] == "Frailty: Healthy Ageing and Frailty Strategy"

    fields["items-0-heading"] = "Frailty: a strategy for healthy ageing"
    fields["items-0-url"] = "http://www.example.org/ics/priorities/frailty"
    assert editor.post(path, data=fields).status_code == 303
    saved = file_text(world.settings, "02-priorities.md")
    assert 'heading: "Frailty: a strategy for healthy ageing"' in saved  # quoted as the file quoted it
    assert "Initial discussions have been held" in saved  # the summary kept

    issue_page = editor.get(f"/console/issues/{draft.id}").get_data(as_text=True)
    link = f'href="{path}#f-items-0-url"'
    assert link in issue_page and "should be a full https:// address" in issue_page
    assert re.search(r"<button type=\"submit\" disabled[^>]*>Send for approval", issue_page)
    section_page, fields = open_section(editor, draft.id, "02-priorities.md")
    assert 'id="f-items-0-url"' in section_page and link in section_page
    # The field itself says what is wrong, for eyes and for screen readers.
    assert re.search(r'<p class="error" id="f-items-0-url-finding-1">`url` should be a full https:// address', section_page)
    assert re.search(r'id="f-items-0-url"[^>]*aria-describedby="f-items-0-url-finding-1"', section_page)

    fields["items-0-url"] = "https://www.example.org/ics/priorities/frailty"
    editor.post(path, data=fields)
    assert the_draft(world.settings).errors == 0
    assert "should be a full https:// address" not in editor.get(f"/console/issues/{draft.id}").get_data(as_text=True)


def test_a_second_conflicting_save_is_refused_says_what_changed_and_keeps_the_text(world, app, editor):
    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft = the_draft(world.settings)
    path = f"/console/issues/{draft.id}/sections/01-chair.md"
    other = client_of(app, ADMIN)
    _html, mine = open_section(editor, draft.id, "01-chair.md")
    _html, theirs = open_section(other, draft.id, "01-chair.md")

    theirs["body"] = "A warm welcome. " + theirs["body"]
    assert other.post(path, data=theirs).status_code == 303
    mine["body"] = "My rewritten letter, which must not be lost."
    refused = editor.post(path, data=mine)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 409
    assert f"{ADMIN} saved this section" in text
    assert "A warm welcome" in text  # what they changed
    assert "My rewritten letter, which must not be lost." in text  # the text is kept in the form
    assert "A warm welcome" in file_text(world.settings, "01-chair.md")  # theirs stands
    # Saving again from the refused page (it carries the new version) replaces theirs, knowingly.
    again = form_fields(text, path)
    assert editor.post(path, data=again).status_code == 303
    assert "My rewritten letter" in file_text(world.settings, "01-chair.md")


def test_the_zip_round_trip_changes_nothing_and_the_cli_accepts_the_download(world, editor, tmp_path, cli):
    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft = the_draft(world.settings)
    downloaded = editor.get(f"/console/issues/{draft.id}/download.zip")
    assert downloaded.status_code == 200 and downloaded.mimetype == "application/zip"
    zipfile.ZipFile(io.BytesIO(downloaded.data)).extractall(tmp_path / "out")
    folder = tmp_path / "out" / world.slug / "issues" / "2021-09"
    result = cli("check", str(folder))
    assert result.exit_code == 0, result.output
    for path in folder.iterdir():  # byte for byte what was uploaded
        assert path.read_bytes() == (SAMPLE_ISSUE / path.name).read_bytes(), path.name

    # ... and back: the download uploaded again makes an identical second issue.
    assert upload(editor, downloaded.data, "again.zip", slug="2021-09-again",
                  publication_id=world.publication_id).status_code == 303
    with session_scope(world.settings) as session:
        drafts_by_slug = {d.slug: d.id for d in session.scalars(select(Draft))}
        files = {(f.draft_id, f.name): f.data for f in session.scalars(select(DraftFile))}
    first, second = drafts_by_slug["2021-09"], drafts_by_slug["2021-09-again"]
    assert {n: d for (i, n), d in files.items() if i == first} == {n: d for (i, n), d in files.items() if i == second}


def evil_zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("data, expected", [
    (b"PK\x03\x04 this is not really a zip", "not a readable .zip file"),
    (evil_zip({"issue.yaml": b"title: x\n", "../../etc/cron.d/evil": b"* * * * * root true"}),
     "would be written outside the issue"),
    (evil_zip({"issue/issue.yaml": b"title: x\n", "/tmp/abs.md": b"x"}), "would be written outside the issue"),
    (evil_zip({"2021-09/issue.yaml": b"title: x\n", "2021-09/photo.png": b"this is not a picture"}),
     "photo.png: it is not a picture"),
    (evil_zip({"notes.md": b"no manifest here"}), "there is no issue.yaml"),
    (evil_zip({"issue.yaml": b"title: x\n", "01-letter.md": b"a" * (3 * 1024 * 1024)}),
     "01-letter.md: it is 3.0 MB; at most 2 MB per file"),
])
def test_bad_uploads_are_refused_with_a_clear_message_and_store_nothing(world, editor, data, expected):
    response = upload(editor, data, "bad.zip", slug="bad", publication_id=world.publication_id)
    assert response.status_code == 400
    assert expected in response.get_data(as_text=True)
    with session_scope(world.settings) as session:
        assert session.scalars(select(Draft)).all() == []
        assert session.scalars(select(DraftFile)).all() == []


def test_an_uploaded_picture_is_checked_and_declared(world, editor):
    from PIL import Image

    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft = the_draft(world.settings)
    page = f"/console/issues/{draft.id}"

    def send(name, data):
        return post(editor, f"{page}/images", {"image": (io.BytesIO(data), name)}, page=page,
                    content_type="multipart/form-data")

    refused = send("chart.png", b"GIF89a but not really")
    assert refused.status_code == 409 and "chart.png: it is not a picture" in refused.get_data(as_text=True)
    picture = io.BytesIO()
    Image.new("RGB", (5000, 10), "white").save(picture, "PNG")
    too_wide = send("wide.png", picture.getvalue())
    assert "5000 x 10 pixels; at most 4000" in too_wide.get_data(as_text=True)
    picture = io.BytesIO()
    Image.new("RGB", (640, 320), "white").save(picture, "PNG")
    stored = send("team.png", picture.getvalue())
    assert stored.status_code == 303
    assert "team.png (640 x 320 pixels) is stored" in editor.get(page).get_data(as_text=True)


def outbox(settings) -> list:
    """Every message the console sent (proofs, notices), as parsed emails."""
    from email import message_from_bytes, policy

    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(settings.outbox_dir.glob("*.eml"))]


def to(settings, address: str) -> list[str]:
    return [m["Subject"] for m in outbox(settings) if m["To"] == address]


@pytest.fixture
def submitted(world, app, editor):
    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft = the_draft(world.settings)
    assert press(editor, draft.id, "submit").status_code == 303
    return draft.id


def test_roles_an_editor_cannot_approve_and_an_operator_cannot_edit(world, app, editor, submitted):
    refused = press(editor, submitted, "approve")
    assert refused.status_code == 403
    assert the_draft(world.settings).state == "awaiting approval"

    operator = client_of(app, OPERATOR)
    path = f"/console/issues/{submitted}/sections/01-chair.md"
    page, fields = open_section(operator, submitted, "01-chair.md")
    assert "Save this section" not in page and "readonly" in page  # they may read it
    fields["body"] = "An operator's rewrite"
    assert operator.post(path, data=fields).status_code == 403
    assert "An operator's rewrite" not in file_text(world.settings, "01-chair.md")
    assert post(operator, "/console/new", {"how": "blank", "publication": str(world.publication_id), "slug": "x",
                                           "title": "X"}).status_code == 403
    # ... and the ops dashboard is theirs, not the editor's.
    assert operator.get("/ops/").status_code == 200
    assert editor.get("/ops/").status_code == 403


def test_an_approver_who_edited_cannot_approve_unless_the_publication_allows_it(world, app, submitted):
    admin = client_of(app, ADMIN)  # an admin holds every role
    path = f"/console/issues/{submitted}/sections/01-chair.md"
    _page, fields = open_section(admin, submitted, "01-chair.md")
    fields["body"] += "\n\nA line from the admin."
    admin.post(path, data=fields)
    assert the_draft(world.settings).state == "draft"  # an edit while awaiting approval sends it back
    press(admin, submitted, "submit")
    refused = press(admin, submitted, "approve")
    assert refused.status_code == 409 and "you edited this issue" in refused.get_data(as_text=True)
    post(admin, f"/console/publications/{world.publication_id}/self-approval", {"allowed": "yes"}, page="/console/accounts")
    assert press(admin, submitted, "approve").status_code == 303
    assert the_draft(world.settings).state == "approved"


def test_submit_reject_approve_each_email_the_people_concerned_and_an_edit_sends_it_back(world, app, editor, submitted):
    assert to(world.settings, APPROVER) == ["Please approve: Together We're Better Monthly Newsletter"]
    approver = client_of(app, APPROVER)
    assert press(approver, submitted, "reject", {"comment": ""}).status_code == 409  # a comment is needed
    assert press(approver, submitted, "reject", {"comment": "The chart needs a source."}).status_code == 303
    assert the_draft(world.settings).state == "draft"
    [rejection] = [m for m in outbox(world.settings) if m["To"] == EDITOR]
    assert "The chart needs a source." in rejection.get_content()
    assert "The chart needs a source." in editor.get(f"/console/issues/{submitted}").get_data(as_text=True)

    press(editor, submitted, "submit")
    assert press(approver, submitted, "approve").status_code == 303
    assert the_draft(world.settings).state == "approved"
    assert any(subject.startswith("Approved:") for subject in to(world.settings, EDITOR))

    page = f"/console/issues/{submitted}"
    fields = form_fields(editor.get(page).get_data(as_text=True), f"{page}/manifest")
    fields["subject"] = "Together We're Better: September 2021 (corrected)"
    editor.post(f"{page}/manifest", data=fields)
    draft = the_draft(world.settings)
    assert (draft.state, draft.approved_by) == ("draft", "")  # approved text changed: approve again
    with session_scope(world.settings) as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).where(AuditEntry.draft_id == submitted)
                                                     .order_by(AuditEntry.id))]
    assert actions == ["created", "submitted for approval", "rejected", "submitted for approval", "approved", "edited"]


def test_a_proof_arrives_marked_and_touches_no_ledger(world, editor):
    from newsletter.store.models import Delivery

    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft = the_draft(world.settings)
    assert press(editor, draft.id, "proof", {"to": "comms@example.org"}).status_code == 303
    [proof] = [m for m in outbox(world.settings) if m["To"] == "comms@example.org"]
    assert proof["Subject"].startswith("[PROOF] ")
    with session_scope(world.settings) as session:
        assert session.scalars(select(Delivery)).all() == [] and session.scalars(select(Send)).all() == []


@pytest.fixture
def approved(world, app, editor, submitted):
    assert press(client_of(app, APPROVER), submitted, "approve").status_code == 303
    return submitted


def test_schedule_in_local_time_with_utc_and_a_dst_warning_then_send_now_and_see_the_ledgers_numbers(
        world, app, editor, approved, cli):
    import json

    from newsletter.sending.delivery import Deliverer
    from newsletter.sending.lifecycle import claim_due_sends, finish_sends
    from newsletter.store.models import Batch
    from tests.memory_transport import MemoryTransport

    page = f"/console/issues/{approved}"
    # A send on the other side of a clock change from today, whatever today is.
    summer_now = datetime.now(ZoneInfo("Europe/London")).utcoffset() != timedelta(0)
    at, utc, shown = (("2099-01-07 09:00", "2099-01-07 09:00", "Wednesday 07 January 2099 09:00 GMT") if summer_now
                      else ("2099-07-01 09:00", "2099-07-01 08:00", "Wednesday 01 July 2099 09:00 BST"))
    form = editor.get(f"{page}/schedule?lists=everyone&at={at.replace(' ', '+')}").get_data(as_text=True)
    assert f"{shown} ({utc} UTC)" in form
    assert "The clocks go" in form
    assert "Send now to 3 recipients" in form
    scheduled = post(editor, f"{page}/schedule", {"lists": "everyone", "at": at, "when": "at"}, page=page)
    assert scheduled.status_code == 303
    with session_scope(world.settings) as session:
        [send] = session.scalars(select(Send)).all()
        assert (send.state, f"{send.scheduled_at:%Y-%m-%d %H:%M}") == ("scheduled", utc)
    assert "scheduled" in editor.get(page).get_data(as_text=True)
    path = f"{page}/sections/01-chair.md"
    _html, fields = open_section(editor, approved, "01-chair.md")
    refused = editor.post(path, data=fields)
    assert refused.status_code == 409 and "unschedule it first" in refused.get_data(as_text=True)

    confirm = editor.get(f"{page}/confirm/send-now").get_data(as_text=True)
    assert "It goes to <strong>3 recipients</strong>" in confirm
    assert post(editor, f"{page}/send-now", page=f"{page}/confirm/send-now").status_code == 303

    transport = MemoryTransport()
    transport.permanent["reader001@example.com"] = (550, "5.1.1", "<reader001@example.com>: user unknown")
    with session_scope(world.settings) as session:
        claim_due_sends(session, world.settings)
    with session_scope(world.settings) as session:
        deliverer = Deliverer(world.settings, transport)
        for batch_id in session.scalars(select(Batch.id)).all():
            deliverer.deliver_batch(session, batch_id)
    with session_scope(world.settings) as session:
        finish_sends(session)

    [expected] = [s for s in json.loads(cli("ops", "status", "--json").output)["sends"] if s["issue"] == "2021-09"]
    [shown] = editor.get(f"{page}/progress.json").get_json()["sends"]
    for key in ("sent", "failed", "pending", "audience", "bounces", "complaints", "possible_duplicates"):
        assert shown[key] == expected[key], key
    assert (shown["sent"], shown["failed"]) == (2, 1)
    results = editor.get(f"{page}/results").get_data(as_text=True)
    assert '<strong data-field="sent">2</strong>' in results and '<strong data-field="failed">1</strong>' in results
    assert "user unknown" in results
    csv_text = editor.get(f"{page}/failures.csv").get_data(as_text=True)
    assert csv_text.splitlines()[0] == "send,list,email,attempts,error"
    assert "reader001@example.com" in csv_text and "reader000" not in csv_text
    # Sent: frozen. A correction goes into a new issue.
    refused = editor.post(path, data=fields)
    assert refused.status_code == 409 and "frozen" in refused.get_data(as_text=True)


def test_the_dst_warning_names_the_change_between_now_and_the_send():
    from datetime import timezone

    from newsletter.console.workflow import dst_warning
    from newsletter.sending.scheduling import parse_local_time

    winter = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    assert dst_warning(parse_local_time("2026-12-01 09:00", "Europe/London"), winter) == ""
    warning = dst_warning(parse_local_time("2027-04-01 09:00", "Europe/London"), winter)
    assert warning.startswith("The clocks go forward in Europe/London") and "08:00 UTC" in warning


def test_an_invitation_link_sets_a_password_once_and_a_revoked_account_is_out_at_once(world, app):
    admin = client_of(app, ADMIN)
    assert post(admin, "/console/accounts", {"email": "newcomer@example.org", "publication": str(world.publication_id),
                                             "roles": "editor"}, page="/console/accounts").status_code == 303
    [invitation] = [m for m in outbox(world.settings) if m["To"] == "newcomer@example.org"]
    link = re.search(r"https://newsletter\.example\.org(/console/welcome/\S+)", invitation.get_content()).group(1)
    newcomer = app.test_client()
    assert log_in(newcomer, "newcomer@example.org").status_code == 401  # no password before the link is used
    page = newcomer.get(link)
    assert page.status_code == 200 and "newcomer@example.org" in page.get_data(as_text=True)
    short = newcomer.post(link, data={"csrf_token": csrf_of(newcomer, link), "password": "short", "again": "short"})
    assert short.status_code == 400 and "at least 12 are needed" in short.get_data(as_text=True)
    chosen = {"password": "a newcomer's long passphrase", "again": "a newcomer's long passphrase"}
    assert newcomer.post(link, data={"csrf_token": csrf_of(newcomer, link), **chosen}).status_code == 303
    assert newcomer.get(link).status_code == 410  # single use
    assert log_in(newcomer, "newcomer@example.org", chosen["password"]).status_code == 303
    assert newcomer.get("/console/new").status_code == 200  # an editor now

    with session_scope(world.settings) as session:
        from newsletter.store.models import Admin

        newcomer_id = session.scalars(select(Admin.id).where(Admin.email == "newcomer@example.org")).one()
    post(admin, f"/console/accounts/{newcomer_id}/revoke", page="/console/accounts")
    assert newcomer.get("/console/").status_code == 302  # their open session ended at once
    assert log_in(newcomer, "newcomer@example.org", chosen["password"]).status_code == 401


def test_a_reset_link_expires_and_a_tampered_one_does_not_work(world, app, monkeypatch):
    from newsletter.accounts import invitations

    client = app.test_client()
    post(client, "/console/forgot", {"email": EDITOR}, page="/console/forgot")
    [reset] = [m for m in outbox(world.settings) if m["To"] == EDITOR]
    link = re.search(r"https://newsletter\.example\.org(/console/welcome/\S+)", reset.get_content()).group(1)
    assert client.get(link + "x").status_code == 410
    monkeypatch.setattr(invitations, "RESET_SECONDS", -1)  # an hour has passed
    expired = client.get(link)
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    # Asking for an address nobody has says the same and sends nothing.
    answer = post(client, "/console/forgot", {"email": "nobody@example.org"}, page="/console/forgot")
    assert "If an account has that address" in answer.get_data(as_text=True)
    assert not [m for m in outbox(world.settings) if m["To"] == "nobody@example.org"]


def test_the_issue_list_shows_each_state_and_filters_by_it(world, app, editor, approved):
    post(editor, "/console/new", {"how": "copy", "publication": str(world.publication_id), "slug": "2021-10"},
         page="/console/new")
    listing = editor.get("/console/").get_data(as_text=True)
    states = dict(re.findall(r'<span class="muted">([\w-]+)</span></td>.*?data-field="state">([^<]+)<', listing, re.DOTALL))
    assert states == {"2021-09": "approved", "2021-10": "draft"}
    only_drafts = editor.get("/console/?state=draft").get_data(as_text=True)
    assert "2021-10" in only_drafts and "2021-09" not in only_drafts
    assert "No issue is sent yet" in editor.get("/console/?state=sent").get_data(as_text=True)


def test_a_post_without_a_csrf_token_changes_nothing(world, editor):
    upload(editor, sample_zip(), publication_id=world.publication_id)
    draft = the_draft(world.settings)
    path = f"/console/issues/{draft.id}/sections/01-chair.md"
    _html, fields = open_section(editor, draft.id, "01-chair.md")
    fields["body"] = "Forged from another site"
    del fields["csrf_token"]
    assert editor.post(path, data=fields).status_code == 400
    assert editor.post(f"/console/issues/{draft.id}/submit").status_code == 400
    assert "Forged" not in file_text(world.settings, "01-chair.md")
    assert the_draft(world.settings).state == "draft"


def test_reschedule_and_unschedule_a_scheduled_issue(world, editor, approved):
    page = f"/console/issues/{approved}"
    post(editor, f"{page}/schedule", {"lists": "everyone", "at": "2099-03-01 09:00", "when": "at"}, page=page)
    confirm = editor.get(f"{page}/confirm/reschedule").get_data(as_text=True)
    assert "3 recipients are waiting for it" in confirm
    moved = post(editor, f"{page}/reschedule", {"at": "2099-03-02 10:30"}, page=f"{page}/confirm/reschedule")
    assert moved.status_code == 303
    with session_scope(world.settings) as session:
        [send] = session.scalars(select(Send)).all()
        assert f"{send.scheduled_at:%Y-%m-%d %H:%M}" == "2099-03-02 10:30"  # GMT: UTC is the same
    assert "Rescheduled for Monday 02 March 2099 10:30 GMT" in editor.get(page).get_data(as_text=True)
    assert post(editor, f"{page}/unschedule", page=f"{page}/confirm/unschedule").status_code == 303
    with session_scope(world.settings) as session:
        assert session.scalars(select(Send.state)).all() == ["cancelled"]
        history = session.execute(select(SendEvent.kind, SendEvent.detail).order_by(SendEvent.id)).all()
    assert the_draft(world.settings).state == "approved"  # it can be scheduled again
    # The send's history (sends show, the dashboard) says who moved it and from where.
    assert [tuple(h) for h in history[-2:]] == [
        ("rescheduled", f"for 2099-03-02 10:30:00 UTC, by {EDITOR} from the console"),
        ("unscheduled", f"by {EDITOR} from the console")]
