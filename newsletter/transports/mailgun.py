"""Mailgun's messages API: one call per up to 1,000 recipients (batch sending).

The issue goes once per call with ``%recipient.<key>%`` tags where each
recipient's values go; ``recipient-variables`` holds every recipient's values,
keyed by address, and also makes Mailgun send each recipient a message of
their own. The same tags carry the per-recipient headers (List-Unsubscribe,
Message-Id) and the ledger row (``v:delivery_id``, seen again in webhooks).
HTML and text have keys of their own, since only the HTML's are escaped.

Mailgun answers 200 with one id for the whole call, which is every
recipient's provider id. Any error (400, 401, 429, 5xx) is for the call.
"""

from __future__ import annotations

import json
from email.headerregistry import Address
from urllib.parse import quote

from newsletter.transports.base import TEMPORARY, Envelope, Result
from newsletter.transports.http import (
    HttpApi,
    HttpTransport,
    MergeContent,
    Outcome,
    check_batch_size,
    json_or_none,
    key_fingerprint,
    merge_content,
    merge_values,
    personal_headers,
    require,
    sent,
    shared_headers,
)

MAX_RECIPIENTS = 1000
# Per-recipient values that are not placeholders of the issue.
_PERSONAL = {"List-Unsubscribe": "list_unsubscribe", "Message-ID": "message_id"}


def merge_key(name: str, part: str) -> str:
    return f"{name}_{part}"


def merge_tag(name: str, part: str) -> str:
    return f"%recipient.{merge_key(name, part)}%"


class MailgunTransport(HttpTransport):
    TRANSPORT = "mailgun"  # its settings: the mailgun group of config.py
    webhook = "mailgun"  # feedback/webhooks/mailgun.py
    name = "Mailgun"
    utf8_local_parts = True  # its messages API sends with SMTPUTF8 (its "Internationalization" guide)
    credentials = "MAILGUN_API_KEY (and MAILGUN_API_URL for the EU region)"

    def __init__(self, api_key: str, domain: str, *, api_url: str = "https://api.mailgun.net",
                 batch_size: int = MAX_RECIPIENTS, connect_timeout: float = 10.0, read_timeout: float = 60.0):
        require(api_key, "MAILGUN_API_KEY", "mailgun")
        require(domain, "MAILGUN_DOMAIN", "mailgun")
        check_batch_size("MAILGUN_BATCH_SIZE", batch_size, MAX_RECIPIENTS)
        self.batch_size = batch_size
        self.path = f"/v3/{quote(domain, safe='')}/messages"
        super().__init__(HttpApi(
            "Mailgun", api_url, auth=("api", api_key),
            connect_timeout=connect_timeout, read_timeout=read_timeout,
        ))
        self._content: tuple[object, MergeContent] | None = None

    @classmethod
    def from_settings(cls, settings) -> MailgunTransport:
        return cls(
            settings.mailgun_api_key,
            settings.mailgun_domain,
            api_url=settings.mailgun_api_url,
            batch_size=settings.mailgun_batch_size,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
        )

    @staticmethod
    def account_key(settings) -> str:
        return f"mailgun:{settings.mailgun_domain}:{key_fingerprint(settings.mailgun_api_key)}"

    def send_batch(self, batch: list[Envelope]) -> list[Result]:
        response = self.api.post(self.path, data=self.form(batch))
        if isinstance(response, Outcome):
            return response.results(batch)
        answer = json_or_none(response)
        if response.status_code == 200 and isinstance(answer, dict) and answer.get("id"):
            return sent(str(answer["id"]).strip("<>"), 200).results(batch)
        message = answer.get("message", "") if isinstance(answer, dict) else response.text[:300]
        if response.status_code == 200:
            # Mailgun says 200 with no id for a URL that is not the messages API.
            return Outcome(TEMPORARY, code=200, error=(
                f"Mailgun's answer at {self.api.base_url}{self.path} has no message id ({message}): "
                "check MAILGUN_DOMAIN and MAILGUN_API_URL")).results(batch)
        return self.refused(response, message).results(batch)

    def form(self, batch: list[Envelope]) -> list[tuple[str, str]]:
        template = batch[0].template
        content = self.content(template)
        form = [
            ("from", str(Address(template.from_name, addr_spec=template.from_email))),
            ("subject", template.full_subject),
            ("text", content.text),
            ("html", content.html),
        ]
        headers = {**shared_headers(template), **{k: f"%recipient.{v}%" for k, v in _PERSONAL.items()}}
        if template.reply_to:
            headers["Reply-To"] = template.reply_to
        form += [(f"h:{k}", v) for k, v in headers.items()]
        form.append(("v:delivery_id", "%recipient.delivery_id%"))
        variables = {}
        for envelope in batch:
            name, values = template.values_for(envelope.person)
            form.append(("to", str(Address(name, addr_spec=envelope.recipient))))
            variables[envelope.recipient] = self.recipient_variables(content, envelope, values)
        form.append(("recipient-variables", json.dumps(variables)))
        return form

    def recipient_variables(self, content: MergeContent, envelope: Envelope, values: dict[str, str]) -> dict:
        personal = personal_headers(envelope)
        return {
            **merge_values(content, values, merge_key),
            **{key: personal[header] for header, key in _PERSONAL.items()},
            "delivery_id": str(envelope.delivery_id),
        }

    def content(self, template) -> MergeContent:
        if self._content is None or self._content[0] is not template:
            self._content = (template, merge_content(template, merge_tag))
        return self._content[1]
