from __future__ import annotations

import json

import pytest

from newsletter.config import settings_from
from newsletter.transports import make_transport
from newsletter.transports.base import PERMANENT, SENT, TEMPORARY, TransportError
from newsletter.transports.mailgun import MailgunTransport
from tests.conftest import free_port
from tests.fake_providers import (  # noqa: F401 (a fixture)
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    assert_each_reader_sees_what_build_gives,
    mailgun_server,
    sample_envelopes,
)


def transport_for(server, **options) -> MailgunTransport:
    return MailgunTransport(options.pop("api_key", MAILGUN_KEY), options.pop("domain", MAILGUN_DOMAIN),
                            api_url=server.url, **options)


def statuses(results):
    return [r.status for r in results]


def test_each_reader_gets_the_issue_personalised_as_build_makes_it(mailgun_server):
    envelopes = sample_envelopes(20)
    with transport_for(mailgun_server) as transport:
        results = transport.send_many(envelopes)

    assert statuses(results) == [SENT] * 20
    assert_each_reader_sees_what_build_gives(envelopes, mailgun_server.delivered)
    # The ledger row comes back in Mailgun's events as a user variable.
    assert sorted(int(d.tags["delivery_id"]) for d in mailgun_server.delivered) == list(range(1, 21))
    assert {r.provider_message_id for r in results} == {d.provider_id for d in mailgun_server.delivered}


def test_request_has_the_documented_shape(mailgun_server):
    with transport_for(mailgun_server) as transport:
        transport.send_many(sample_envelopes(2))

    call = mailgun_server.calls[0]
    assert call.path == f"/v3/{MAILGUN_DOMAIN}/messages"
    assert (call.authorization.username, call.authorization.password) == ("api", MAILGUN_KEY)
    form = mailgun_server.bodies[0]
    assert form.getlist("to") == ["reader1@example.com", "Zoë Müller <reader2@example.com>"]
    assert form["h:List-Unsubscribe"] == "%recipient.list_unsubscribe%"
    assert form["h:List-Id"] == "Together We're Better <twb.example.org>"
    variables = json.loads(form["recipient-variables"])
    assert variables["reader2@example.com"]["name_html"] == "Zoë Müller"
    assert variables["reader1@example.com"]["unsubscribe_url_html"].endswith("send=7&amp;reader=1")
    assert variables["reader1@example.com"]["unsubscribe_url_text"].endswith("send=7&reader=1")


def test_2500_recipients_take_three_calls_of_at_most_1000(mailgun_server):
    envelopes = sample_envelopes(2500)
    with transport_for(mailgun_server) as transport:
        results = transport.send_many(envelopes)

    assert statuses(results) == [SENT] * 2500
    assert [len(form.getlist("to")) for form in mailgun_server.bodies] == [1000, 1000, 500]


def test_one_address_twice_goes_in_separate_calls(mailgun_server):
    # Recipient variables are keyed by address, so one call cannot carry it twice.
    envelopes = sample_envelopes(2) + sample_envelopes(1)
    with transport_for(mailgun_server) as transport:
        assert statuses(transport.send_many(envelopes)) == [SENT] * 3
    assert [form.getlist("to")[0] for form in mailgun_server.bodies] == ["reader1@example.com"] * 2


def test_throttling_is_temporary_and_says_when_to_retry(mailgun_server):
    mailgun_server.throttle(retry_after="5")
    with transport_for(mailgun_server) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert all(r.code == 429 and "retry after 5 seconds" in r.error for r in results)


def test_a_refused_call_is_permanent_with_mailguns_reason(mailgun_server):
    mailgun_server.refuse("reader2@example.com")
    with transport_for(mailgun_server) as transport:
        results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [PERMANENT] * 2
    assert all("not a valid address" in r.error for r in results)


def test_server_errors_are_temporary(mailgun_server):
    mailgun_server.answer_next(502, {"message": "bad gateway"})
    with transport_for(mailgun_server) as transport:
        assert statuses(transport.send_many(sample_envelopes(1))) == [TEMPORARY]


def test_a_wrong_key_or_domain_says_what_to_check(mailgun_server):
    with transport_for(mailgun_server, api_key="wrong") as transport:
        wrong_key = transport.send_many(sample_envelopes(1))
    with transport_for(mailgun_server, domain="other.example.org") as transport:
        wrong_domain = transport.send_many(sample_envelopes(1))
    assert statuses(wrong_key) == [TEMPORARY] and "MAILGUN_API_KEY" in wrong_key[0].error
    assert statuses(wrong_domain) == [PERMANENT] and "Domain not found" in wrong_domain[0].error


def test_a_server_that_is_down_is_temporary():
    transport = MailgunTransport(MAILGUN_KEY, MAILGUN_DOMAIN, api_url=f"http://127.0.0.1:{free_port()}")
    results = transport.send_many(sample_envelopes(2))
    assert statuses(results) == [TEMPORARY] * 2
    assert not any(r.uncertain for r in results)


def test_make_transport_reads_the_mailgun_settings(mailgun_server):
    settings = settings_from({"TRANSPORT": "mailgun", "MAILGUN_API_KEY": MAILGUN_KEY, "MAILGUN_DOMAIN": MAILGUN_DOMAIN,
                              "MAILGUN_API_URL": mailgun_server.url})
    with make_transport(settings) as transport:
        assert statuses(transport.send_many(sample_envelopes(2))) == [SENT] * 2


def test_settings_mailgun_cannot_use_are_refused():
    with pytest.raises(TransportError, match="MAILGUN_DOMAIN"):
        make_transport(settings_from({"TRANSPORT": "mailgun", "MAILGUN_API_KEY": "k"}))
    with pytest.raises(TransportError, match="MAILGUN_API_KEY"):
        make_transport(settings_from({"TRANSPORT": "mailgun", "MAILGUN_DOMAIN": MAILGUN_DOMAIN}))
