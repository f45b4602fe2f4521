from __future__ import annotations

import email
import email.policy
import threading

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import SENT, TEMPORARY, Envelope
from newsletter.transports.outbox import OutboxTransport


def message_bytes(recipient: str, subject: str = "September news") -> bytes:
    return (
        "From: Together We're Better <news@example.org>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{recipient.replace('@', '.')}@news.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Hello,\r\n"
        ".a line that starts with a dot\r\n"
        "Café opening hours have changed.\r\n"
    ).encode("utf-8")


def envelope(delivery_id: int, recipient: str) -> Envelope:
    return Envelope(
        delivery_id=delivery_id,
        sender="bounces@example.org",
        recipient=recipient,
        message=message_bytes(recipient),
        message_id=f"<{recipient.replace('@', '.')}@news.example.org>",
    )


def test_each_message_is_a_complete_eml_file_that_parses(tmp_path):
    outbox = OutboxTransport(tmp_path / "outbox")
    envelopes = [envelope(1, "ana@example.com"), envelope(2, "ben@example.net")]

    results = outbox.send_many(envelopes)

    assert [r.status for r in results] == [SENT, SENT]
    assert [r.delivery_id for r in results] == [1, 2]
    files = outbox.files()
    assert len(files) == 2
    for sent, path in zip(envelopes, files):
        stored = path.read_bytes()
        assert stored.endswith(sent.message)  # the message itself is untouched
        parsed = email.message_from_bytes(stored, policy=email.policy.default)
        assert parsed["Delivered-To"] == sent.recipient
        assert parsed["Return-Path"] == "<bounces@example.org>"
        assert parsed["To"] == sent.recipient
        assert "Café opening hours" in parsed.get_content()


def test_result_names_the_file_it_wrote(tmp_path):
    outbox = OutboxTransport(tmp_path)

    [result] = outbox.send_many([envelope(7, "ana@example.com")])

    assert (tmp_path / result.provider_message_id).is_file()
    assert outbox.files_for(7) == [tmp_path / result.provider_message_id]


def test_a_second_write_of_the_same_delivery_is_a_visible_duplicate(tmp_path):
    outbox = OutboxTransport(tmp_path)
    first = outbox.send_many([envelope(3, "ana@example.com")])
    second = outbox.send_many([envelope(3, "ana@example.com")])

    assert first[0].provider_message_id != second[0].provider_message_id
    assert len(outbox.files_for(3)) == 2
    assert outbox.files_for(30) == []


def test_no_temporary_files_are_left_behind(tmp_path):
    outbox = OutboxTransport(tmp_path)
    outbox.send_many([envelope(i, f"reader{i}@example.com") for i in range(1, 21)])

    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 20
    assert all(name.endswith(".eml") and not name.startswith(".") for name in names)


def test_concurrent_writers_of_one_delivery_both_keep_their_copy(tmp_path):
    outboxes = [OutboxTransport(tmp_path) for _ in range(4)]
    threads = [
        threading.Thread(target=o.send_many, args=([envelope(9, "ana@example.com")] * 5,)) for o in outboxes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outboxes[0].files_for(9)) == 20


def test_an_unwritable_outbox_fails_temporarily_and_says_where(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    outbox = OutboxTransport(blocker / "outbox")

    [result] = outbox.send_many([envelope(1, "ana@example.com")])

    assert result.status == TEMPORARY
    assert "not-a-folder" in result.error


def test_make_transport_builds_the_outbox_of_the_settings(tmp_path):
    settings = settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path), "TRANSPORT": "outbox"})

    transport = make_transport(settings)
    transport.send_many([envelope(1, "ana@example.com")])

    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
