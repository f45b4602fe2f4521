"""Addresses beyond ASCII, sent to a real SMTP server on loopback, on SQLite and PostgreSQL.

A domain in Unicode goes out in its IDNA form, to any server; a local part
beyond ASCII goes out with SMTPUTF8 to a server that offers it, and to one that
does not, the row fails as unsendable without holding it against the send's
error budget (it says nothing about the send) and without suppressing the person.
"""

from __future__ import annotations

from dataclasses import replace
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from newsletter.sending import delivery, scheduling
from newsletter.store.models import Delivery, Membership, Send, Subscriber, Suppression
from newsletter.transports.smtp import SmtpTransport
from tests.sending.world import make_world, run_send
from tests.fake_providers import postmark_server  # noqa: F401  (a fixture)
from tests.smtp_server import SmtpTestServer


@pytest.fixture
def strict(settings):
    """An error budget that pauses a send at the first failures."""
    return replace(settings, retry_base_delay_seconds=0.0, error_budget_ratio=0.1, error_budget_minimum=2,
                   batch_size=50, smtp_connections=1)


def world_with(session, addresses: list[str]) -> int:
    """A list of reader000@example.com and ``addresses``, and a send to it; the send's id."""
    _, lst, issue = make_world(session, 1)
    for address in addresses:
        subscriber = Subscriber(email=address, name="Reader", status="active", attributes={})
        session.add(subscriber)
        session.flush()
        session.add(Membership(list_id=lst.id, subscriber_id=subscriber.id, status="confirmed"))
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=50)
    session.commit()
    return send.id


def rows(session, send_id) -> dict[str, tuple[str, str]]:
    return {r.email: (r.state, r.last_error) for r in session.scalars(select(Delivery).where(Delivery.send_id == send_id))}


def send_through(session, settings, server, send_id) -> None:
    with SmtpTransport(server.host, server.port, security="none", connections=1, timeout=5) as transport:
        run_send(session, settings, transport, send_id)


def test_a_domain_beyond_ascii_goes_out_in_its_idna_form(session, strict):
    send_id = world_with(session, ["reader@bücher.example", "Jo@Straße.example"])
    with SmtpTestServer() as server:  # no SMTPUTF8 needed
        send_through(session, strict, server, send_id)

    assert session.get(Send, send_id).state == "finished"
    assert {r: s for r, (s, _) in rows(session, send_id).items()} == {
        "reader@bücher.example": "sent", "Jo@Straße.example": "sent", "reader000@example.com": "sent"}
    by_recipient = {m.recipients[0]: m for m in server.messages}
    assert set(by_recipient) == {"reader@xn--bcher-kva.example", "Jo@xn--strae-oqa.example", "reader000@example.com"}
    message = message_from_bytes(by_recipient["reader@xn--bcher-kva.example"].data, policy=policy.default)
    assert message["To"].addresses[0].addr_spec == "reader@xn--bcher-kva.example"
    assert not by_recipient["reader@xn--bcher-kva.example"].data.split(b"\r\n\r\n")[0].decode("ascii").count("ü")


def test_a_local_part_beyond_ascii_goes_out_with_smtputf8_where_the_server_offers_it(session, strict):
    send_id = world_with(session, ["jörg@bücher.example"])
    with SmtpTestServer(smtputf8=True) as server:
        send_through(session, strict, server, send_id)

    assert rows(session, send_id)["jörg@bücher.example"][0] == "sent"
    [received] = [m for m in server.messages if m.recipients != ["reader000@example.com"]]
    assert received.recipients == ["jörg@xn--bcher-kva.example"]
    headers = received.data.split(b"\r\n\r\n")[0].decode("utf-8")
    assert "\r\nTo: " in "\r\n" + headers and "<jörg@xn--bcher-kva.example>" in headers


def test_a_row_the_server_can_never_take_fails_as_unsendable_and_spares_the_error_budget(session, strict):
    addresses = ["jörg@example.org", "ñandú@example.org", "zoë@example.org", "ødegård@example.org"]
    send_id = world_with(session, addresses)
    with SmtpTestServer() as server:  # no SMTPUTF8: these four can never go this way
        send_through(session, strict, server, send_id)

    send = session.get(Send, send_id)
    assert send.state == "finished", send.paused_reason  # 4 failures of 5 would have paused it
    found = rows(session, send_id)
    assert found["reader000@example.com"][0] == "sent"
    for address in addresses:
        state, error = found[address]
        assert state == "failed" and error.startswith("unsendable:") and "SMTPUTF8" in error
    assert [m.recipients for m in server.messages] == [["reader000@example.com"]]
    assert session.scalars(select(Suppression)).all() == []  # the person is not at fault


def test_the_batch_report_counts_unsendable_rows_apart(session, strict):
    send_id = world_with(session, ["jörg@example.org", "zoë@example.org"])
    from newsletter.sending import lifecycle

    with SmtpTestServer() as server, \
            SmtpTransport(server.host, server.port, security="none", connections=1, timeout=5) as transport:
        [batch_id] = lifecycle.tick(session, strict)
        report = delivery.Deliverer(strict, transport).deliver_batch(session, batch_id)
    assert (report.sent, report.failed, report.unsendable) == (1, 0, 2)


def test_a_provider_without_smtputf8_is_never_handed_such_an_address(session, strict, postmark_server):
    """Postmark (like SES and SendGrid) cannot carry a local part beyond ASCII:
    that row fails as unsendable without a call; the domain beyond ASCII goes in IDNA form."""
    from newsletter.transports.postmark import PostmarkTransport
    from tests.fake_providers import POSTMARK_TOKEN

    send_id = world_with(session, ["jörg@example.org", "jo@bücher.example"])
    with PostmarkTransport(POSTMARK_TOKEN, api_url=postmark_server.url) as transport:
        run_send(session, strict, transport, send_id)

    assert session.get(Send, send_id).state == "finished"
    found = rows(session, send_id)
    assert found["jörg@example.org"][0] == "failed"
    assert found["jörg@example.org"][1].startswith("unsendable:") and "Postmark cannot send" in found["jörg@example.org"][1]
    assert found["jo@bücher.example"][0] == "sent"
    assert sorted(d.to_email for d in postmark_server.delivered) == ["jo@xn--bcher-kva.example", "reader000@example.com"]
