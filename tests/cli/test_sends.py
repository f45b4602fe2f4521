"""Scheduling and steering sends from the command line, as a comms editor does."""

from __future__ import annotations

import re
import shutil
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from newsletter.config import get_settings
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, IssueRow, Send
from tests.cli.stored import count
from tests.conftest import SAMPLE_ISSUE


@pytest.fixture
def staff(cli):
    assert cli("subscribers", "add", "reader1@example.com", "--name", "Reader One").exit_code == 0
    result = cli("build", SAMPLE_ISSUE, "--out", get_settings().data_dir / "build")
    assert result.exit_code == 0, result.output
    result = cli("publications", "add", SAMPLE_ISSUE.parent.parent)
    assert result.exit_code == 0 and "together-were-better" in result.output, result.output
    assert "together-were-better" in cli("publications", "list").output
    result = cli("lists", "create", "staff", "--name", "Staff")
    assert result.exit_code == 0, result.output
    assert cli("subscribers", "add", "reader1@example.com", "--list", "staff").exit_code == 0
    return "staff"


def test_schedule_shows_local_time_and_utc(cli, staff):
    result = cli("schedule", SAMPLE_ISSUE, "--list", staff, "--at", "2099-07-01 09:30")
    assert result.exit_code == 0, result.output
    assert "09:30 BST" in result.output and "08:30 UTC" in result.output
    assert count(Send) == 1 and count(IssueRow) == 1


def test_schedule_in_the_past_is_refused_and_nothing_is_stored(cli, staff):
    result = cli("schedule", SAMPLE_ISSUE, "--list", staff, "--at", "2001-01-01 09:00")
    assert result.exit_code == 2
    assert "in the past" in result.output and "--now" in result.output
    assert count(Send) == 0 and count(IssueRow) == 0


def test_schedule_to_an_unknown_list_names_it_and_stores_nothing(cli, staff):
    result = cli("schedule", SAMPLE_ISSUE, "--list", "nobody", "--now")
    assert result.exit_code == 2
    assert "nobody" in result.output
    assert count(Send) == 0 and count(IssueRow) == 0


def test_schedule_of_a_corrupt_issue_names_the_file_and_line(cli, staff, tmp_path):
    broken = tmp_path / "issue-copy"
    shutil.copytree(SAMPLE_ISSUE.parent.parent, broken)
    section = broken / "issues" / "2021-09" / "01-chair.md"
    section.write_text(section.read_text().replace("kind: letter", "kind: letter\n  bad: [indent", 1))
    result = cli("schedule", broken / "issues" / "2021-09", "--list", staff, "--now")
    assert result.exit_code == 1  # the issue has errors, as `check` says it
    assert "01-chair.md:" in result.output
    assert "Traceback" not in result.output
    assert count(Send) == 0 and count(IssueRow) == 0


def test_neither_at_nor_now_is_a_clear_error(cli, staff):
    result = cli("schedule", SAMPLE_ISSUE, "--list", staff)
    assert result.exit_code == 2 and "--now" in result.output


def test_pause_resume_cancel_and_list(cli, staff):
    assert cli("schedule", SAMPLE_ISSUE, "--list", staff, "--at", "2099-07-01 09:30").exit_code == 0
    listed = cli("sends", "list")
    assert "2021-09" in listed.output and "scheduled" in listed.output
    paused = cli("sends", "pause", "1")
    assert paused.exit_code == 2 and "scheduled" in paused.output  # nothing to pause yet
    now = cli("sends", "now", "1")
    assert now.exit_code == 0 and "Send 1 is due now: the beat starts it within" in now.output
    assert "cancelled" in cli("sends", "cancel", "1", "--yes").output
    assert cli("sends", "resume", "1").exit_code == 2
    shown = cli("sends", "show", "1").output
    assert "cancelled, scheduled for" in shown and "for 2099-07-01 08:30:00 UTC" in shown  # the first time
    assert [line.split()[3] for line in shown.splitlines() if line.startswith("  20")] == ["scheduled", "send", "cancelled"]
    import getpass
    import socket

    by = f"by {getpass.getuser()} on {socket.gethostname()} from the command line"  # who steered it, and where
    assert [line for line in shown.splitlines() if "cancelled  " in line][0].endswith(by)
    assert f"UTC, {by}" in shown  # send now
    unknown = cli("sends", "show", "99")
    assert unknown.exit_code == 2 and "no send 99" in unknown.output


def test_proof_goes_to_the_given_addresses_only_and_touches_no_ledger(cli, staff, tmp_path):
    result = cli("proof", SAMPLE_ISSUE, "--to", "editor@example.org", "--to", "checker@example.org")
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 2
    message = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert message["Subject"].startswith("[PROOF] ")
    assert message["To"].addresses[0].addr_spec in ("editor@example.org", "checker@example.org")
    assert count(Delivery) == 0 and count(Send) == 0


class WatchingConsole:
    """Stands in for the schedule command's console: looks in the database, through a
    connection of its own, at the moment each line is printed."""

    def __init__(self):
        self.lines: list[tuple[str, int]] = []  # (text, sends the database shows then)

    def print(self, text="", *args, **kwargs):
        self.lines.append((str(text), count(Send)))


def test_schedule_announces_the_send_only_once_it_is_committed(cli, staff, monkeypatch):
    from newsletter.cli import sends

    watching = WatchingConsole()
    monkeypatch.setattr(sends, "console", watching)

    result = cli("schedule", SAMPLE_ISSUE, "--list", staff, "--at", "2099-07-01 09:30")

    assert result.exit_code == 0, result.output
    announced = [seen for text, seen in watching.lines if text.startswith("Scheduled send")]
    assert announced == [1]  # printed once, when another connection already sees the send


def test_a_schedule_whose_commit_fails_prints_no_send_and_exits_non_zero(cli, staff, database_url):
    """A real failure at commit: PostgreSQL runs a deferred trigger that refuses the new send."""
    from click.testing import CliRunner
    from sqlalchemy import create_engine, text

    from newsletter.cli import main

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no deferred trigger to fail a commit with")
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE FUNCTION refuse_send() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the test refuses this commit'; END $$"
        ))
        connection.execute(text(
            "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON sends "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_send()"
        ))
    engine.dispose()

    result = CliRunner().invoke(main, ["schedule", str(SAMPLE_ISSUE), "--list", staff, "--at", "2099-07-01 09:30"])

    assert result.exit_code != 0
    assert "the test refuses this commit" in str(result.exception)
    assert "Scheduled send" not in result.output
    assert count(Send) == 0


class StateWatchingConsole:
    """Stands in for the sends commands' console: reads the send's state, through a
    connection of its own, at the moment each line is printed."""

    def __init__(self, send_id: int):
        self.send_id = send_id
        self.lines: list[tuple[str, str]] = []  # (text, the state another connection sees then)

    def print(self, text="", *args, **kwargs):
        with session_scope(get_settings()) as session:
            state = session.scalar(select(Send.state).where(Send.id == self.send_id))
        self.lines.append((str(text), state))


@pytest.mark.parametrize("command, before, announced", [
    (("pause", "{id}"), "sending", "paused"),
    (("unschedule", "{id}"), "scheduled", "cancelled"),
    (("cancel", "--yes", "{id}"), "scheduled", "cancelled"),
])
def test_a_sends_command_announces_the_new_state_only_once_it_is_committed(
        cli, staff, monkeypatch, command, before, announced):
    from sqlalchemy import update

    from newsletter.cli import sends

    result = cli("schedule", SAMPLE_ISSUE, "--list", staff, "--at", "2099-07-01 09:30")
    assert result.exit_code == 0, result.output
    with session_scope(get_settings()) as session:
        send_id = session.scalar(select(Send.id))
        session.execute(update(Send).where(Send.id == send_id).values(state=before))  # as the beat leaves it
    watching = StateWatchingConsole(send_id)
    monkeypatch.setattr(sends, "console", watching)

    result = cli("sends", *(part.format(id=send_id) for part in command))

    assert result.exit_code == 0, result.output
    said = [(text, state) for text, state in watching.lines if "is now" in text]
    assert said == [(f"Send {send_id} is now [bold]{announced}[/].", announced)], watching.lines


def test_subscribers_show_answers_why_someone_did_or_did_not_get_an_issue(cli, staff):
    """The operator's question on call: what happened to this person's copy?"""
    from newsletter.sending import lifecycle
    from newsletter.sending.delivery import Deliverer
    from tests.memory_transport import MemoryTransport

    assert cli("subscribers", "add", "reader2@example.com", "--name", "Reader Two", "--list", staff).exit_code == 0
    assert cli("suppressions", "add", "Reader2@Example.com", "--note", "asked by phone").exit_code == 0
    assert cli("schedule", SAMPLE_ISSUE, "--list", staff, "--now").exit_code == 0
    settings = get_settings()
    with session_scope(settings) as session:
        deliverer = Deliverer(settings, MemoryTransport())
        for batch_id in lifecycle.tick(session, settings):
            deliverer.deliver_batch(session, batch_id)

    one = cli("subscribers", "show", "READER1@example.com")
    assert one.exit_code == 0, one.output
    assert "reader1@example.com (Reader One): active" in one.output
    assert "together-were-better: staff (confirmed)" in one.output
    assert re.search(r"“Together We're Better Monthly Newsletter” \(01 September 2021\) +sent", one.output)
    two = cli("subscribers", "show", "reader2@example.com").output
    assert "Suppressed since" in two and "never mailed again" in two
    assert "Together We're Better Monthly Newsletter" not in two  # suppressed before the send: never in its audience
    missing = cli("subscribers", "show", "nobody@example.com")
    assert missing.exit_code == 2 and "no subscriber nobody@example.com" in missing.output and "search" in missing.output
