"""Each TRANSPORT value is a module whose Transport class declares itself: how
it is made, the account its mail is counted against, and its webhook."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from newsletter.authoring.sending_block import SendingBlock
from newsletter.config import TRANSPORTS, Settings
from newsletter.feedback.webhooks import providers
from newsletter.transports import Transport, TransportError, account_of, transport_class


@pytest.mark.parametrize("name", TRANSPORTS)
def test_each_transport_value_names_a_class_that_declares_itself(name):
    cls = transport_class(name)
    assert issubclass(cls, Transport) and cls.TRANSPORT == name
    assert cls.__module__ in (f"newsletter.transports.{name}", f"newsletter.transports.{name}.transport")
    assert callable(cls.from_settings) and callable(cls.account_key)


def test_an_unknown_transport_is_refused_before_anything_is_imported():
    with pytest.raises(TransportError, match="unknown transport 'base'"):
        transport_class("base")


KEY = "SG.0123456789"  # sha256 5e65b5fb85...: its first ten hex digits tell keys apart


@pytest.mark.parametrize("settings, account", [
    (Settings(transport="outbox"), "outbox"),
    (Settings(transport="smtp", smtp_host="relay.example.org", smtp_port=587), "smtp:relay.example.org:587"),
    (Settings(transport="smtp", smtp_host="relay.example.org", smtp_port=587, smtp_username="twb"),
     "smtp:twb@relay.example.org:587"),
    (Settings(transport="ses"), "ses:default:default"),
    (Settings(transport="ses", ses_region="eu-west-1", ses_access_key_id="AKIA1"), "ses:eu-west-1:AKIA1"),
    (Settings(transport="sendgrid", sendgrid_api_key=KEY), "sendgrid:5e65b5fb85"),
    (Settings(transport="sendgrid"), "sendgrid:none"),
    (Settings(transport="postmark", postmark_server_token=KEY), "postmark:5e65b5fb85"),
    (Settings(transport="mailgun", mailgun_domain="mg.example.org", mailgun_api_key=KEY),
     "mailgun:mg.example.org:5e65b5fb85"),
])
def test_each_transport_makes_its_account_from_who_logs_in(settings, account):
    assert account_of(settings, SendingBlock()) == account


def test_a_named_account_comes_before_the_one_the_transport_makes():
    settings = Settings(transport="smtp", rate_limit_account="shared-relay")
    assert account_of(settings, SendingBlock()) == "shared-relay"
    assert account_of(settings, SendingBlock(account="partnership")) == "partnership"
    assert account_of(replace(settings, rate_limit_account=""), SendingBlock()) == "smtp:127.0.0.1:25"


def test_the_webhooks_are_those_the_transports_name():
    assert {source: module.__name__ for source, module in providers().items()} == {
        "ses": "newsletter.feedback.webhooks.ses_sns",
        "sendgrid": "newsletter.feedback.webhooks.sendgrid",
        "postmark": "newsletter.feedback.webhooks.postmark",
        "mailgun": "newsletter.feedback.webhooks.mailgun",
    }


def test_finding_every_transport_and_webhook_does_not_import_boto3():
    # boto3 is the `ses` extra: needed only when an SES transport is made.
    code = ("import sys\n"
            "from newsletter.transports import TRANSPORTS, transport_class\n"
            "from newsletter.feedback.webhooks import providers\n"
            "[transport_class(name) for name in TRANSPORTS]\n"
            "providers()\n"
            "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
