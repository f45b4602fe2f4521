"""Another provider's suppression list uploaded on the console's Suppression list
page (Flask's test client): the good rows are suppressed, the bad ones named by
line, one audit entry says what the file did, the same file again adds nothing,
a file that cannot be read stores nothing, and who may upload one."""

from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import func, select

from newsletter.accounts import admins
from newsletter.audience.suppressions import is_suppressed
from newsletter.store.db import session_scope
from newsletter.store.models import AuditEntry, Suppression
from tests.console_world import ADMIN, APPROVER, EDITOR, OPERATOR, PASSWORD, client_of, form_fields, make_world, post
from tests.passwords import quick_hashes

NOBODY = "nobody@example.org"  # an account with no role in any publication
PAGE, IMPORT = "/console/suppressions", "/console/suppressions/import"
ACTION = "imported to the suppression list"
OLD_PROVIDER = (
    "email,reason,note\n"
    "Gone@Example.org,cleaned,from Mailchimp\n"  # line 2: another provider's word for a hard bounce
    "angry@example.org,spam report,\n"  # 3
    "not-an-address,bounced,\n"  # 4: rejected
    "quiet@example.org,,\n"  # 5: the form's reason
    "odd@example.org,holiday,\n"  # 6: rejected
).encode()


@pytest.fixture
def world(settings):
    world = make_world(settings)
    with session_scope(settings) as session, quick_hashes():
        account = admins.invite_account(session, NOBODY, world.publication_id, [])
        admins.set_password(session, account, PASSWORD)
    return world


def upload(client, data: bytes, name: str = "old-provider.csv", reason: str = "hard_bounce"):
    return post(client, IMPORT, {"file": (io.BytesIO(data), name), "reason": reason}, page=PAGE,
                content_type="multipart/form-data")


def text_of(response) -> str:
    """The page's text, tags dropped and spaces collapsed: what a reader sees."""
    html = re.sub(r"(?s)<style.*?</style>", " ", response.get_data(as_text=True))
    html = re.sub(r"</?(span|a|strong|code|em)\b[^>]*>", "", html)
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&#39;", "'").replace("&amp;", "&").split())


def suppressed(settings) -> dict[str, str]:
    with session_scope(settings) as session:
        return dict(session.execute(select(Suppression.email, Suppression.reason)).all())


def entries(settings) -> list[tuple[str, str]]:
    with session_scope(settings) as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == ACTION).order_by(AuditEntry.id))
        return [(entry.actor, entry.detail) for entry in rows]


def test_the_page_has_the_upload_form_with_manual_as_the_reason(world, editor):
    html = editor.get(PAGE).get_data(as_text=True)
    assert "Bring a list from another provider" in html
    assert '<input type="file" id="import-file" name="file" accept=".csv,text/csv" required' in html
    assert '<label for="import-file">' in html and '<label for="import-reason">' in html
    assert 'enctype="multipart/form-data"' in html and "at most 10 MB" in html
    fields = form_fields(html, IMPORT)
    assert set(fields) == {"csrf_token", "file", "reason"} and fields["reason"] == "manual"


def test_an_upload_suppresses_the_good_rows_names_the_bad_ones_by_line_and_is_audited(world, editor):
    response = upload(editor, OLD_PROVIDER)
    page = text_of(response)
    assert response.status_code == 200
    assert "From old-provider.csv: 3 addresses suppressed now, 0 were already, 2 rows rejected." in page
    assert "old-provider.csv:4: 'not-an-address' is not an email address" in page
    assert "old-provider.csv:6: 'holiday' is not a reason to suppress for" in page
    assert "gone@example.org" in page  # in the list below
    with session_scope(world.settings) as session:
        assert all(is_suppressed(session, a) for a in ("gone@example.org", "angry@example.org", "quiet@example.org"))
        assert not is_suppressed(session, "odd@example.org")
    assert suppressed(world.settings) == {"gone@example.org": "hard_bounce", "angry@example.org": "complaint",
                                          "quiet@example.org": "hard_bounce"}
    assert entries(world.settings) == [(EDITOR, "old-provider.csv: 3 added, 0 already there, 2 rejected")]


def test_the_same_file_again_adds_nothing(world, editor):
    upload(editor, OLD_PROVIDER)
    before = suppressed(world.settings)
    again = upload(editor, OLD_PROVIDER, reason="manual")
    assert again.status_code == 200
    assert "From old-provider.csv: 0 addresses suppressed now, 3 were already, 2 rows rejected." in text_of(again)
    assert suppressed(world.settings) == before
    assert entries(world.settings)[-1] == (EDITOR, "old-provider.csv: 0 added, 3 already there, 2 rejected")


def test_only_the_first_fifty_rejected_rows_are_listed(world, editor):
    data = ("email\n" + "".join(f"bad{n}\n" for n in range(60))).encode()
    page = text_of(upload(editor, data, "bad.csv"))
    assert "60 rows rejected" in page and "The first 50 of 60 are shown" in page
    assert "bad.csv:51: 'bad49'" in page and "bad.csv:52:" not in page


UNREADABLE = {
    "no email column": (b"address,why\nsomeone@example.org,spam\n",
                        "old.csv:1: no email column (the columns are: address, why) "
                        "(the first line must name the columns, e.g. email,reason,note)"),
    "not UTF-8": (b"email\nfirst@example.org\ncaf\xe9@example.org\n",
                  "old.csv:3: the file is not UTF-8 text (save it as 'CSV UTF-8' (in a spreadsheet: Save As, "
                  "CSV UTF-8) and upload it again)"),
    "UTF-16": ("email\nfirst@example.org\n".encode("utf-16-le"),
               "old.csv: the file contains NUL characters (zero bytes): it is not CSV text"),
}


@pytest.mark.parametrize("kind", UNREADABLE)
def test_a_file_that_cannot_be_read_stores_nothing_and_says_why(world, editor, kind):
    data, problem = UNREADABLE[kind]
    response = upload(editor, data, "old.csv")
    page = text_of(response)
    assert response.status_code == 400
    assert f"Nothing was stored. {problem}" in page
    assert suppressed(world.settings) == {} and entries(world.settings) == []


def test_no_file_or_a_reason_not_on_the_form_is_refused(world, editor):
    no_file = post(editor, IMPORT, {"reason": "manual"}, page=PAGE, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "file: no file was chosen (choose the CSV file to import)" in text_of(no_file)
    odd_reason = upload(editor, OLD_PROVIDER, reason="erased")
    assert odd_reason.status_code == 400 and "field reason: 'erased' is not a reason to suppress for" in text_of(odd_reason)
    assert suppressed(world.settings) == {} and entries(world.settings) == []


def test_a_file_over_the_limit_is_refused_before_it_is_read(world, editor, monkeypatch):
    import newsletter.web.console as console

    monkeypatch.setattr(console, "IMPORT_BYTES", 2000)
    response = upload(editor, b"email\n" + b"someone@example.org\n" * 200)
    assert response.status_code == 413
    assert "A CSV file can be at most" in text_of(response) and "`newsletter suppressions import`" in text_of(response)
    assert suppressed(world.settings) == {}


# Adding to the suppression list only ever stops mail: any role in any publication may, as for one address.
@pytest.mark.parametrize("account", [EDITOR, APPROVER, OPERATOR, ADMIN, NOBODY])
def test_any_account_with_a_role_may_upload_and_one_without_is_refused(world, app, account):
    response = upload(client_of(app, account), OLD_PROVIDER)
    with session_scope(world.settings) as session:
        count = session.scalar(select(func.count()).select_from(Suppression))
    if account == NOBODY:
        assert response.status_code == 403 and "Not for this account" in text_of(response)
        assert count == 0 and entries(world.settings) == []
    else:
        assert response.status_code == 200 and count == 3
        assert entries(world.settings) == [(account, "old-provider.csv: 3 added, 0 already there, 2 rejected")]
