"""Each publication sends as itself: two publications at the same moment, each
through its own server and account, with real Celery workers, Redis and
PostgreSQL.

Rates are measured where they count, at the servers: the moments the SMTP
servers and the provider fakes took each message. Each limit holds across
two worker processes (at most ``rate + burst`` messages in any one-second
window), every message carries its own publication's From, DKIM d=, bounce
address, List-Id and link host, and a 550 storm on one publication pauses
that send only.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from datetime import timedelta
from email import message_from_bytes
from email.utils import parseaddr
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select

from newsletter.sending import dkim
from newsletter.store.db import session_scope
from newsletter.store.models import BatchRun, Delivery, SendEvent
from tests.fake_providers import POSTMARK_TOKEN, SENDGRID_KEY, FakePostmark, FakeSendGrid
from tests.pipeline import Pipeline
from tests.smtp_server import SmtpTestServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "together-were-better"


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def publication_folder(tmp_path: Path, slug: str, name: str, domain: str, sending: str) -> Path:
    """A copy of the sample publication as another brand, with a sending block; returns its issue folder."""
    folder = tmp_path / slug
    shutil.copytree(SAMPLE, folder)
    path = folder / "publication.yaml"
    text = path.read_text()
    for old, new in (
        ("slug: together-were-better", f"slug: {slug}"),
        ("name: Together We're Better", f"name: {name}"),
        ("from_name: Together We're Better", f"from_name: {name}"),
        ("from_email: news@example.org", f"from_email: news@{domain}"),
        ("reply_to: communications@example.org", f"reply_to: hello@{domain}"),
        ("web_base_url: https://news.example.org/together-were-better/", f"web_base_url: https://news.{domain}/{slug}/"),
        ("signup_url: https://news.example.org/subscribe/together-were-better/monthly",
         f"signup_url: https://news.{domain}/subscribe/{slug}/everyone"),
    ):
        text, found = re.subn(rf"^{re.escape(old)}$", new, text, flags=re.MULTILINE)
        assert found == 1, old
    path.write_text(text + "\n" + sending)
    return folder / "issues" / "2021-09"


def prepare(pipeline: Pipeline, issue_folder: Path, prefix: str, subscribers: int, delay: float = 2.0) -> int:
    from newsletter.audience.subscribers import add_subscriber, create_list, get_list
    from newsletter.authoring.publishing import checked_render
    from newsletter.sending import scheduling
    from newsletter.store.issues import store_issue
    from newsletter.store.migrate import upgrade
    from newsletter.store.models import utcnow

    upgrade(pipeline.settings.effective_database_url)
    rendered, _ = checked_render(issue_folder)
    slug = rendered.issue.publication.slug
    with session_scope(pipeline.settings) as session:
        issue = store_issue(session, rendered)
        create_list(session, slug, "everyone", "Everyone")
        for n in range(subscribers):
            add_subscriber(session, address(prefix, n), name=f"Reader {n}", lists=["everyone"], publication_slug=slug)
        send = scheduling.schedule_send(session, issue, get_list(session, slug, "everyone"),
                                        utcnow() + timedelta(seconds=delay), batch_size=pipeline.settings.batch_size)
        return send.id


def address(prefix: str, n: int) -> str:
    return f"{prefix}{n:03d}@example.com"


def most_in_one_second(moments: list[float]) -> int:
    """The most messages a server took within any one second."""
    moments = sorted(moments)
    most, start = 0, 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def ledger(pipeline, send_id: int) -> list[Delivery]:
    with session_scope(pipeline.settings) as session:
        rows = session.scalars(select(Delivery).where(Delivery.send_id == send_id)).all()
        session.expunge_all()
        return rows


def events(pipeline, send_id: int) -> list[str]:
    with session_scope(pipeline.settings) as session:
        return list(session.scalars(select(SendEvent.kind).where(SendEvent.send_id == send_id)))


def workers_that_ran(pipeline, *send_ids: int) -> set[str]:
    with session_scope(pipeline.settings) as session:
        names = session.scalars(select(BatchRun.worker).where(BatchRun.send_id.in_(send_ids))).all()
    return {name.split("/")[0].rsplit(":", 1)[0] for name in names}  # host:pid, without the nonce


def header_host(value: str) -> str:
    return re.match(r"<https://([^/>]+)/", value).group(1)


@pytest.fixture
def two_servers():
    with SmtpTestServer() as alpha, SmtpTestServer(users={"neighbour": "relay-password"}) as beta:
        yield alpha, beta


def smtp_lanes(tmp_path, alpha, beta, alpha_pem: Path):
    alpha_issue = publication_folder(tmp_path, "alpha-health", "Alpha Health Partnership", "alpha.example", f"""
sending:
  base_url: https://links.alpha.example
  transport: smtp
  smtp: {{host: {alpha.host}, port: {alpha.port}, security: none}}
  connections: 2
  rate: {{per_second: 5}}
  bounce_domain: bounces.alpha.example
  list_id_domain: lists.alpha.example
  feedback_id_sender: alpha-news
  dkim:
    - {{selector: a2026, domain: alpha.example, key_file: {alpha_pem}}}
""")
    beta_issue = publication_folder(tmp_path, "neighbour-news", "Neighbour Trust News", "neighbour.example", f"""
sending:
  base_url: https://links.neighbour.example
  transport: smtp
  account: neighbour-relay
  smtp:
    host: {beta.host}
    port: {beta.port}
    security: none
    username: neighbour
    password_env: NEIGHBOUR_SMTP_PASSWORD
  connections: 2
  rate: {{per_second: 3}}
  bounce_domain: bounces.neighbour.example
  dkim:
    - {{selector: n2026, domain: neighbour.example, key_env: NEIGHBOUR_DKIM_KEY}}
""")
    return alpha_issue, beta_issue


def dns_answer(records: dict[str, bytes]):
    def lookup(name, timeout=5):
        return records.get(name.decode().rstrip("."))
    return lookup


def test_two_publications_send_at_once_each_through_its_own_server_account_and_limit(
        tmp_path, postgres_url, redis_url, two_servers):
    alpha, beta = two_servers
    alpha_pem, beta_pem = rsa_pem(), ed25519_pem()  # RSA for one, Ed25519 (RFC 8463) for the other
    (tmp_path / "alpha-dkim.pem").write_bytes(alpha_pem)
    alpha_issue, beta_issue = smtp_lanes(tmp_path, alpha, beta, tmp_path / "alpha-dkim.pem")
    # The environment's own transport is a third server, which must receive nothing.
    with SmtpTestServer() as neither:
        pipeline = Pipeline(tmp_path, postgres_url, redis_url, neither, BATCH_SIZE=10,
                            NEIGHBOUR_SMTP_PASSWORD="relay-password", NEIGHBOUR_DKIM_KEY=beta_pem.decode())
        try:
            alpha_send = prepare(pipeline, alpha_issue, "alpha", 30)
            beta_send = prepare(pipeline, beta_issue, "beta", 18)
            pipeline.start_worker("worker1", concurrency=2)
            pipeline.start_worker("worker2", concurrency=2)
            pipeline.start_beat()
            pipeline.wait_finished(alpha_send)
            pipeline.wait_finished(beta_send)
        finally:
            pipeline.stop_all()
        assert neither.messages == []

    assert sorted(r for m in alpha.messages for r in m.recipients) == [address("alpha", n) for n in range(30)]
    assert sorted(r for m in beta.messages for r in m.recipients) == [address("beta", n) for n in range(18)]
    # Each limit held at its own server, though two worker processes sent for each.
    assert len(workers_that_ran(pipeline, alpha_send, beta_send)) >= 2
    assert most_in_one_second([m.received_at for m in alpha.messages]) <= 5 + 5
    assert most_in_one_second([m.received_at for m in beta.messages]) <= 3 + 3
    assert {m.login for m in beta.messages} == {"neighbour"}

    keys = {
        "a2026._domainkey.alpha.example": dkim.DkimSigner(alpha_pem, "a2026").dns_record().encode(),
        "n2026._domainkey.neighbour.example": dkim.DkimSigner(beta_pem, "n2026").dns_record().encode(),
    }
    for server, domain, list_id in ((alpha, "alpha.example", "<everyone.alpha-health.lists.alpha.example>"),
                                    (beta, "neighbour.example", "<everyone.neighbour-news.neighbour.example>")):
        for received in server.messages:
            message = message_from_bytes(received.data)
            assert parseaddr(message["From"])[1] == f"news@{domain}"
            assert dkimpy.verify(received.data, dnsfunc=dns_answer(keys))
            assert re.search(rb"\bd=" + re.escape(domain.encode()) + rb";", received.data)
            assert re.fullmatch(rf"bounces\+\d+-[0-9a-f]{{12}}@bounces\.{re.escape(domain)}", received.mail_from)
            assert message["List-Id"].endswith(list_id)
            assert header_host(message["List-Unsubscribe"]) == f"links.{domain}"
            other = "neighbour.example" if domain == "alpha.example" else "alpha.example"
            assert other.encode() not in received.data
    assert message_from_bytes(alpha.messages[0].data)["Feedback-ID"].endswith(":alpha-health:alpha-news")

    # The ledger says which transport and account sent each row.
    assert {(r.transport, r.account) for r in ledger(pipeline, alpha_send)} == {
        ("smtp", f"smtp:{alpha.host}:{alpha.port}")}
    assert {(r.transport, r.account) for r in ledger(pipeline, beta_send)} == {("smtp", "neighbour-relay")}


def test_a_550_storm_on_one_publication_pauses_its_send_only(tmp_path, postgres_url, redis_url, two_servers):
    alpha, beta = two_servers
    (tmp_path / "alpha-dkim.pem").write_bytes(rsa_pem())
    alpha_issue, beta_issue = smtp_lanes(tmp_path, alpha, beta, tmp_path / "alpha-dkim.pem")
    alpha.reject_recipients(*(address("alpha", n) for n in range(40)),
                            reply="550 5.7.1 Service unavailable; client host blocked")
    with SmtpTestServer() as neither:
        pipeline = Pipeline(tmp_path, postgres_url, redis_url, neither, BATCH_SIZE=10,
                            ERROR_BUDGET_RATIO="0.2", ERROR_BUDGET_MINIMUM="5",
                            NEIGHBOUR_SMTP_PASSWORD="relay-password", NEIGHBOUR_DKIM_KEY=rsa_pem().decode())
        try:
            alpha_send = prepare(pipeline, alpha_issue, "alpha", 40)
            beta_send = prepare(pipeline, beta_issue, "beta", 15)
            pipeline.start_worker("worker1", concurrency=2)
            pipeline.start_worker("worker2", concurrency=2)
            pipeline.start_beat()
            pipeline.wait_for(lambda: pipeline.progress(alpha_send).state == "paused", what="the storm to pause alpha")
            beta_progress = pipeline.wait_finished(beta_send)
        finally:
            pipeline.stop_all()

    assert "error budget exceeded" in pipeline.progress(alpha_send).paused_reason
    # The other publication finished, never paused, each message at the first try.
    assert beta_progress.counts == {"sent": 15}
    assert "paused" not in events(pipeline, beta_send)
    assert {r.attempts for r in ledger(pipeline, beta_send)} == {1}
    assert sorted(r for m in beta.messages for r in m.recipients) == [address("beta", n) for n in range(15)]
    assert most_in_one_second([m.received_at for m in beta.messages]) <= 3 + 3


def test_two_publications_through_two_provider_accounts_each_with_its_own_limit(
        tmp_path, postgres_url, redis_url):
    sendgrid, postmark = FakeSendGrid().start(), FakePostmark().start()
    token_file = tmp_path / "postmark-token"
    token_file.write_text(POSTMARK_TOKEN + "\n")
    alpha_issue = publication_folder(tmp_path, "alpha-health", "Alpha Health Partnership", "alpha.example", f"""
sending:
  base_url: https://links.alpha.example
  transport: sendgrid
  sendgrid: {{api_key_env: ALPHA_SENDGRID_KEY, api_url: "{sendgrid.url}"}}
  rate: {{per_second: 4}}
""")
    beta_issue = publication_folder(tmp_path, "neighbour-news", "Neighbour Trust News", "neighbour.example", f"""
sending:
  base_url: https://links.neighbour.example
  transport: postmark
  postmark: {{server_token_file: {token_file}, api_url: "{postmark.url}"}}
  rate: {{per_second: 6}}
""")
    try:
        with SmtpTestServer() as neither:
            pipeline = Pipeline(tmp_path, postgres_url, redis_url, neither, BATCH_SIZE=10,
                                ALPHA_SENDGRID_KEY=SENDGRID_KEY)
            try:
                alpha_send = prepare(pipeline, alpha_issue, "alpha", 24)
                beta_send = prepare(pipeline, beta_issue, "beta", 30)
                pipeline.start_worker("worker1", concurrency=2)
                pipeline.start_worker("worker2", concurrency=2)
                pipeline.start_beat()
                pipeline.wait_finished(alpha_send)
                pipeline.wait_finished(beta_send)
            finally:
                pipeline.stop_all()
            assert neither.messages == []
    finally:
        sendgrid.stop()
        postmark.stop()

    assert sorted(d.to_email for d in sendgrid.delivered) == [address("alpha", n) for n in range(24)]
    assert sorted(d.to_email for d in postmark.delivered) == [address("beta", n) for n in range(30)]
    assert len(workers_that_ran(pipeline, alpha_send, beta_send)) >= 2
    assert most_in_one_second(sendgrid.delivered_at) <= 4 + 4
    assert most_in_one_second(postmark.delivered_at) <= 6 + 6
    assert {body["from"]["email"] for body in sendgrid.bodies} == {"news@alpha.example"}
    assert {m["From"].rsplit("<", 1)[-1].rstrip(">") for body in postmark.bodies for m in body} == {
        "news@neighbour.example"}
    for delivered, domain in [(d, "alpha.example") for d in sendgrid.delivered] + \
                             [(d, "neighbour.example") for d in postmark.delivered]:
        assert delivered.headers["List-Id"].endswith(f".{domain}>")
        assert header_host(delivered.headers["List-Unsubscribe"]) == f"links.{domain}"
    assert {(r.transport, r.account) for r in ledger(pipeline, alpha_send)} == {
        ("sendgrid", f"sendgrid:{hashlib.sha256(SENDGRID_KEY.encode()).hexdigest()[:10]}")}
    assert {r.transport for r in ledger(pipeline, beta_send)} == {"postmark"}
