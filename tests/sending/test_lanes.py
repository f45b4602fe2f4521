"""A worker keeps a lane per publication: its transport, account limit, keys and
links. Bad settings pause that publication's send with a message naming the
publication and the field; one publication's failures never pause another's."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from newsletter.authoring.sending_block import DkimKeyRef, SendingBlock
from newsletter.sending import dkim, scheduling
from newsletter.sending.delivery import Deliverer
from newsletter.sending.lanes import Lanes
from newsletter.store.models import Delivery, Send
from tests.memory_transport import MemoryTransport
from tests.sending.world import make_world, run_sends
from tests.smtp_server import SmtpTestServer


def publication(session, slug: str, sending: dict | None = None, readers: int = 10):
    """A publication of its own slug, name and readers (``<slug>000@example.com`` ...)."""
    return make_world(session, readers, slug=slug, name=slug.title(), sending=sending, reader=slug)


@pytest.fixture
def fast(settings):
    return replace(settings, retry_base_delay_seconds=0.0, batch_size=5, smtp_connections=1,
                   error_budget_ratio=0.2, error_budget_minimum=3)


def rsa_pem() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_a_secret_variable_unset_pauses_that_send_naming_publication_and_field(session, fast, monkeypatch):
    monkeypatch.delenv("GAZETTE_SMTP_PASSWORD", raising=False)
    block = {"transport": "smtp", "secrets": {"smtp_password": {"field": "sending.smtp.password",
                                                               "env": "GAZETTE_SMTP_PASSWORD"}}}
    _, lst, issue = publication(session, "gazette", block)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=5)
    session.commit()
    run_sends(session, fast, Deliverer(fast, MemoryTransport()), send.id)
    reason = session.get(Send, send.id).paused_reason
    assert "publication 'gazette', sending.smtp.password_env" in reason
    assert "GAZETTE_SMTP_PASSWORD is not set" in reason
    assert set(session.scalars(select(Delivery.state).where(Delivery.send_id == send.id))) == {"pending"}


def test_a_dkim_key_file_that_cannot_be_read_pauses_that_send_naming_publication_and_field(session, fast, tmp_path):
    block = SendingBlock(dkim=(DkimKeyRef("s1", "gazette.example.org", key_file=str(tmp_path / "missing.pem")),))
    _, lst, issue = publication(session, "gazette", block.to_json())
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=5)
    session.commit()
    transport = MemoryTransport()
    run_sends(session, fast, Deliverer(fast, transport), send.id)
    reason = session.get(Send, send.id).paused_reason
    assert "publication 'gazette', sending.dkim[1], key_file" in reason and "missing.pem cannot be read" in reason
    assert transport.accepted == []


def test_one_publications_failures_never_pause_anothers_send(session, fast):
    _, a_list, a_issue = publication(session, "stormy", readers=10)
    _, b_list, b_issue = publication(session, "calm", readers=10)
    a = scheduling.schedule_send(session, a_issue, a_list, None, batch_size=5)
    b = scheduling.schedule_send(session, b_issue, b_list, None, batch_size=5)
    session.commit()
    transport = MemoryTransport()
    for i in range(10):
        transport.permanent[f"stormy{i:03d}@example.com"] = (550, "5.7.1", "blocked")
    run_sends(session, fast, Deliverer(fast, transport), a.id, b.id)
    assert session.get(Send, a.id).state == "paused"
    assert "error budget exceeded" in session.get(Send, a.id).paused_reason
    assert session.get(Send, b.id).state == "finished"
    assert sorted(transport.recipients()) == [f"calm{i:03d}@example.com" for i in range(10)]


def test_a_real_send_refuses_links_that_are_not_https_and_public_unless_allowed(session, fast):
    with SmtpTestServer() as smtp:
        block = {"base_url": "http://127.0.0.1:8000", "transport": "smtp",
                 "options": {"smtp_host": smtp.host, "smtp_port": smtp.port, "smtp_security": "none"}}
        _, lst, issue = publication(session, "gazette", block, readers=3)
        refused = scheduling.schedule_send(session, issue, lst, None, batch_size=5)
        session.commit()
        deliverer = Deliverer(fast)
        run_sends(session, fast, deliverer, refused.id)
        reason = session.get(Send, refused.id).paused_reason
        assert "publication 'gazette', sending.base_url" in reason
        assert "http://127.0.0.1:8000 does not use https" in reason and "--allow-private-links" in reason
        assert smtp.messages == []

        scheduling.cancel(session, refused.id)  # its people had nothing: a new send of the issue reaches them
        allowed = scheduling.schedule_send(session, issue, lst, None, batch_size=5, allow_private_links=True)
        session.commit()
        run_sends(session, fast, deliverer, allowed.id)
        deliverer.close()
        assert session.get(Send, allowed.id).state == "finished"
        assert len(smtp.messages) == 3
        assert b"http://127.0.0.1:8000/u/" in smtp.messages[0].data


def test_the_outbox_is_exempt_from_the_link_rule(session, fast):
    _, lst, issue = publication(session, "gazette", {"base_url": "http://127.0.0.1:8000"}, readers=2)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=5)
    session.commit()
    transport = MemoryTransport()
    run_sends(session, fast, Deliverer(fast, transport), send.id)
    assert session.get(Send, send.id).state == "finished"
    assert "http://127.0.0.1:8000/u/" in transport.accepted[0].message.decode()


def test_publications_of_one_account_share_its_limit_and_two_accounts_never_do(session, fast):
    rated = {"transport": "outbox", "per_second": 50}
    one, _, _ = publication(session, "one", {**rated, "account": "shared"}, readers=0)
    two, _, _ = publication(session, "two", {**rated, "account": "shared"}, readers=0)
    three, _, _ = publication(session, "three", {**rated, "account": "own"}, readers=0)
    lanes = Lanes(fast)
    assert lanes.lane(one).limiter is lanes.lane(two).limiter
    assert lanes.lane(one).limiter is not lanes.lane(three).limiter
    assert (lanes.lane(one).account, lanes.lane(three).account) == ("shared", "own")
    lanes.close()


def test_a_new_key_signs_from_its_active_from_and_the_old_one_then_signs_nothing(session, fast, tmp_path):
    old_pem, new_pem = rsa_pem(), rsa_pem()
    (tmp_path / "old.pem").write_bytes(old_pem)
    (tmp_path / "new.pem").write_bytes(new_pem)
    switch = datetime(2026, 12, 1, tzinfo=timezone.utc)
    block = SendingBlock(dkim=(DkimKeyRef("old", "gazette.example.org", key_file=str(tmp_path / "old.pem")),
                               DkimKeyRef("new", "gazette.example.org", key_file=str(tmp_path / "new.pem"),
                                          active_from=switch)))
    pub, _, _ = publication(session, "gazette", block.to_json(), readers=0)
    lane = Lanes(fast).lane(pub)
    records = {f"{s}._domainkey.gazette.example.org.".encode(): dkim.DkimSigner(pem, s).dns_record().encode()
               for s, pem in (("old", old_pem), ("new", new_pem))}
    message = (b"From: news@gazette.example.org\r\nTo: a@example.com\r\nSubject: hi\r\n"
               b"Date: Tue, 01 Dec 2026 09:00:00 +0000\r\nMessage-ID: <1@gazette.example.org>\r\n\r\nHello\r\n")
    # The lane keeps the signer it chose, for as long as it is the one: asked in
    # any order, each moment gets the key of its own.
    for now, selector, other in ((switch - timedelta(seconds=1), b"old", b"new"), (switch, b"new", b"old"),
                                 (switch + timedelta(days=1), b"new", b"old"),
                                 (switch - timedelta(days=1), b"old", b"new")):
        signed = lane.signer(now).sign(message, "gazette.example.org")
        assert dkimpy.verify(signed, dnsfunc=lambda name, timeout=5: records.get(name))
        assert b"s=" + selector + b";" in signed and b"s=" + other + b";" not in signed


def test_a_worker_whose_clock_is_an_hour_fast_signs_with_the_key_of_the_databases_time(session, fast, tmp_path):
    """The new key's record is published just before its active_from: a worker that
    switched early by its own clock would send mail that fails DKIM until then."""
    import time_machine

    from newsletter.store import clock

    old_pem, new_pem = rsa_pem(), rsa_pem()
    (tmp_path / "old.pem").write_bytes(old_pem)
    (tmp_path / "new.pem").write_bytes(new_pem)
    now = clock.read(session)
    block = SendingBlock(dkim=(DkimKeyRef("old", "gazette.example.org", key_file=str(tmp_path / "old.pem")),
                               DkimKeyRef("new", "gazette.example.org", key_file=str(tmp_path / "new.pem"),
                                          active_from=now + timedelta(minutes=30))))
    _, lst, issue = publication(session, "gazette", block.to_json(), readers=3)
    send = scheduling.schedule_send(session, issue, lst, None, batch_size=5)
    session.commit()
    transport = MemoryTransport()
    with time_machine.travel(now + timedelta(hours=1), tick=True):
        run_sends(session, fast, Deliverer(fast, transport), send.id)

    signatures = [m["DKIM-Signature"] for m in transport.parsed()]
    assert len(signatures) == 3 and all("s=old;" in s.replace(" ", "") for s in signatures)
