"""Email provider APIs on loopback, speaking each provider's documented contract.

Each fake checks authentication and the request shape the provider documents,
enforces its batch limits, answers the way the provider answers (ids,
per-message arrays, error bodies), and renders what every recipient would
receive, applying substitutions on the server side as the provider would.
Knobs make it throttle (429 with Retry-After), fail (5xx), refuse given
addresses, or be down. Amazon SES is moto's server, behind a small proxy that
can throttle or reject given recipients the way SES v2 does.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections import deque
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser

import pytest
import requests
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

SENDGRID_KEY = "SG.test-key"
POSTMARK_TOKEN = "postmark-test-token"
MAILGUN_KEY = "key-test"
MAILGUN_DOMAIN = "mg.example.org"
PERSONAL_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Feedback-ID", "Message-ID", "Precedence")


@dataclass
class Delivered:
    """One message as its recipient would receive it."""

    to_email: str
    to_name: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    provider_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # custom args, metadata, v: variables

    def seen(self) -> tuple:
        """What a reader sees: who it is for, the subject and both bodies."""
        return (self.to_email, self.to_name, self.subject, self.text, self.html)


def view_of_message(raw: bytes) -> Delivered:
    """A complete MIME message as a Delivered, to compare with what a provider renders."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    to = message["To"].addresses[0]
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    body_html = message.get_body(("html",)).get_content().replace("\r\n", "\n")
    headers = {name: str(message[name]) for name in PERSONAL_HEADERS if message[name] is not None}
    return Delivered(to.addr_spec, to.display_name, str(message["Subject"]), text, body_html, headers)


def parse_address(value: str) -> tuple[str, str]:
    address = policy.default.header_factory("To", value).addresses[0]
    return address.addr_spec, address.display_name


# --- the server ---------------------------------------------------------------------


class FakeProvider:
    """A server on a loopback port that records calls and answers like a provider."""

    def __init__(self):
        self.calls: list[Request] = []
        self.bodies: list[object] = []  # each call's parsed JSON or form
        self.delivered: list[Delivered] = []
        self.delivered_at: list[float] = []  # time.monotonic() of each delivered message: rates are measured here
        self.refused_addresses: set[str] = set()
        self._scripted: deque[Response] = deque()
        self._lock = threading.Lock()
        self._server = None

    # knobs
    def answer_next(self, status: int, body, headers: dict | None = None, times: int = 1) -> None:
        """The next ``times`` calls get this answer instead of being handled."""
        text = body if isinstance(body, str) else json.dumps(body)
        for _ in range(times):
            self._scripted.append(Response(text, status, headers=headers or {}, content_type="application/json"))

    def throttle(self, times: int = 1, retry_after: str = "7") -> None:
        self.answer_next(429, self.throttled_body, {"Retry-After": retry_after}, times)

    def refuse(self, address: str) -> None:
        self.refused_addresses.add(address.lower())

    throttled_body: object = {"message": "Too many requests"}

    # serving
    def start(self) -> FakeProvider:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
        self._server.daemon_threads = True
        self._server.provider = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def respond(self, request: Request) -> Response:
        request.get_data(cache=True)
        with self._lock:
            self.calls.append(request)
            response = self._scripted.popleft() if self._scripted else None
        return response if response is not None else self.handle(request)

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def record(self, delivered: Delivered) -> None:
        with self._lock:
            self.delivered.append(delivered)
            self.delivered_at.append(time.monotonic())


class _KeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as providers' servers speak it (werkzeug's own
    development server closes every connection)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        builder = EnvironBuilder(
            path=path, query_string=query, method=self.command, headers=list(self.headers.items()), data=body,
            environ_overrides={"REMOTE_ADDR": self.client_address[0], "REMOTE_PORT": self.client_address[1]},
        )
        response = self.server.provider.respond(Request(builder.get_environ()))
        data = response.get_data()
        self.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = do_POST

    def log_message(self, *args):
        pass


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers or {}, content_type="application/json")


def substitute(text: str, table: dict[str, str]) -> str:
    """Replace every key of table in one pass, longest key first, as providers do."""
    if not table:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)))
    return pattern.sub(lambda m: table[m.group(0)], text)


# --- SendGrid v3 /v3/mail/send --------------------------------------------------------


class FakeSendGrid(FakeProvider):
    throttled_body = {"errors": [{"field": None, "message": "too many requests"}]}

    def handle(self, request: Request) -> Response:
        if request.path != "/v3/mail/send" or request.method != "POST":
            return json_response({"errors": [{"field": None, "message": "not found"}]}, 404)
        if request.headers.get("Authorization") != f"Bearer {SENDGRID_KEY}":
            return json_response({"errors": [{"field": None, "message": "The provided authorization grant is "
                                              "invalid, expired, or revoked", "help": None}]}, 401)
        mail = request.get_json()
        self.bodies.append(mail)
        errors = self.problems(mail)
        if errors:
            return json_response({"errors": errors}, 400)
        batch_id = uuid.uuid4().hex[:22]
        for personalization in mail["personalizations"]:
            self.record(self.render(mail, personalization, batch_id))
        return Response("", 202, headers={"X-Message-Id": batch_id})

    def problems(self, mail) -> list[dict]:
        personalizations = mail.get("personalizations") or []
        if not 1 <= len(personalizations) <= 1000:
            return [{"field": "personalizations", "message": "The personalization block is limited to 1000 "
                     f"personalizations per API request. You have provided {len(personalizations)}."}]
        if [c["type"] for c in mail.get("content", [])][:1] != ["text/plain"]:
            return [{"field": "content", "message": "text/plain must come first"}]
        errors = []
        for index, p in enumerate(personalizations):
            if p["to"][0]["email"].lower() in self.refused_addresses:
                errors.append({"field": f"personalizations.{index}.to.0.email",
                               "message": "Does not contain a valid address."})
            if len(json.dumps(p.get("substitutions", {}))) > 10000:
                errors.append({"field": f"personalizations.{index}.substitutions",
                               "message": "substitutions may not exceed 10000 bytes per personalization"})
        return errors

    def render(self, mail, personalization, batch_id: str) -> Delivered:
        table = personalization.get("substitutions", {})
        content = {c["type"]: substitute(c["value"], table) for c in mail["content"]}
        to = personalization["to"][0]
        return Delivered(
            to["email"], to.get("name", ""), substitute(mail["subject"], table),
            content["text/plain"], content["text/html"],
            {**mail.get("headers", {}), **personalization.get("headers", {})},
            provider_id=batch_id, tags=personalization.get("custom_args", {}),
        )


# --- Postmark /email/batch -------------------------------------------------------------


class FakePostmark(FakeProvider):
    throttled_body = {"ErrorCode": 429, "Message": "Rate limit exceeded"}

    def handle(self, request: Request) -> Response:
        if request.path != "/email/batch" or request.method != "POST":
            return json_response({"ErrorCode": 404, "Message": "not found"}, 404)
        if request.headers.get("X-Postmark-Server-Token") != POSTMARK_TOKEN:
            return json_response({"ErrorCode": 10, "Message": "The Server Token you provided in the "
                                  "X-Postmark-Server-Token request header was invalid."}, 401)
        if request.mimetype != "application/json":
            return json_response({"ErrorCode": 409, "Message": "JSON required"}, 422)
        messages = request.get_json()
        self.bodies.append(messages)
        if not isinstance(messages, list) or len(messages) > 500:
            return json_response({"ErrorCode": 410, "Message": "Too many batch messages"}, 422)
        return json_response([self.answer(m) for m in messages])

    def answer(self, message: dict) -> dict:
        if not all(message.get(k) for k in ("From", "To", "Subject")):
            return {"ErrorCode": 300, "Message": "Invalid email request"}
        email, name = parse_address(message["To"])
        if email.lower() in self.refused_addresses:
            return {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as "
                    f"inactive. Found inactive addresses: {email}."}
        message_id = str(uuid.uuid4())
        self.record(Delivered(
            email, name, message["Subject"], message.get("TextBody", ""), message.get("HtmlBody", ""),
            {h["Name"]: h["Value"] for h in message.get("Headers", [])},
            provider_id=message_id, tags={**message.get("Metadata", {}), "stream": message.get("MessageStream")},
        ))
        return {"To": message["To"], "SubmittedAt": "2021-09-01T09:00:00Z", "MessageID": message_id,
                "ErrorCode": 0, "Message": "OK"}


# --- Mailgun /v3/<domain>/messages ----------------------------------------------------


class FakeMailgun(FakeProvider):
    throttled_body = {"message": "Too many requests"}
    _TAG = re.compile(r"%recipient\.([\w.:-]+)%")

    def handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != f"/v3/{MAILGUN_DOMAIN}/messages":
            return json_response({"message": f"Domain not found: {request.path.split('/')[2:3]}"}, 404)
        if request.authorization is None or (request.authorization.username, request.authorization.password) != (
            "api", MAILGUN_KEY
        ):
            return Response("Forbidden", 401)
        form = request.form
        self.bodies.append(form)
        to = form.getlist("to")
        if len(to) > 1000:
            return json_response({"message": "Too many recipients"}, 400)
        if any(parse_address(t)[0].lower() in self.refused_addresses for t in to):
            return json_response({"message": "'to' parameter is not a valid address. please check documentation"}, 400)
        variables = json.loads(form.get("recipient-variables", "{}"))
        message_id = f"<{uuid.uuid4().hex}@{MAILGUN_DOMAIN}>"
        for address in to:
            self.record(self.render(form, address, variables, message_id))
        return json_response({"id": message_id, "message": "Queued. Thank you."})

    def render(self, form, address: str, variables: dict, message_id: str) -> Delivered:
        email, name = parse_address(address)
        mine = variables.get(email, {})

        def fill(text: str) -> str:
            return self._TAG.sub(lambda m: str(mine[m.group(1)]) if m.group(1) in mine else m.group(0), text)

        headers = {k[2:]: fill(v) for k, v in form.items(multi=True) if k.startswith("h:")}
        tags = {k[2:]: fill(v) for k, v in form.items(multi=True) if k.startswith("v:")}
        return Delivered(email, name, fill(form["subject"]), fill(form["text"]), fill(form["html"]), headers,
                         provider_id=message_id.strip("<>"), tags=tags)


# --- Amazon SES: moto's server, with a proxy that can fail calls -------------------------


class SesProxy(FakeProvider):
    """Passes SES v2 calls to moto; throttles or rejects given ones as SES would."""

    def __init__(self, moto_url: str):
        super().__init__()
        self.moto_url = moto_url
        self.throttled_addresses: set[str] = set()

    def throttle_address(self, address: str) -> None:
        self.throttled_addresses.add(address.lower())

    def handle(self, request: Request) -> Response:
        if request.path == "/v2/email/outbound-emails":
            destination = json.loads(request.get_data())["Destination"]["ToAddresses"][0].lower()
            if destination in self.throttled_addresses:
                return ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
            if destination in self.refused_addresses:
                return ses_error(400, "MessageRejected", "Email address is on the account-level suppression list.")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(request.method, self.moto_url + request.full_path.rstrip("?"),
                                  data=request.get_data(), headers=headers, timeout=30)
        excluded = ("content-length", "transfer-encoding", "connection", "content-encoding")
        return Response(answer.content, answer.status_code,
                        headers=[(k, v) for k, v in answer.headers.items() if k.lower() not in excluded])


def ses_error(status: int, code: str, message: str) -> Response:
    # SES v2 is a REST-JSON API: the error's name is in x-amzn-ErrorType.
    return Response(json.dumps({"message": message}), status,
                    headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"},
                    content_type="application/json")


def ses_raw_messages(moto_url: str) -> list[dict]:
    """Every raw message moto's SES took: source, destinations and the bytes."""
    data = requests.get(f"{moto_url}/moto-api/data.json", timeout=10).json()
    return [
        {**m, "raw": m["raw_data"].encode("utf-8") if isinstance(m["raw_data"], str) else base64.b64decode(m["raw_data"])}
        for m in data.get("ses", {}).get("RawMessage", [])
    ]


# --- fixtures ----------------------------------------------------------------------------


def _serve(fake: FakeProvider):
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def sendgrid_server():
    yield from _serve(FakeSendGrid())


@pytest.fixture
def postmark_server():
    yield from _serve(FakePostmark())


@pytest.fixture
def mailgun_server():
    yield from _serve(FakeMailgun())


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def ses_server(moto_server):
    """SES v2 on loopback, emptied for this test, reached through a proxy that can fail calls."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    yield from _serve(SesProxy(moto_server))


# --- an issue and its recipients, for every provider's tests -------------------------------

HTML = (
    '<html><body><p>Dear %%name%%,</p><p>Café news &amp; more – “together”.</p>'
    '<a href="%%unsubscribe_url%%">Unsubscribe</a> <a href="%%preferences_url%%">Preferences</a> '
    '<a href="%%web_url%%">View in a browser</a> Sent to %%email%%.</body></html>'
)
TEXT = (
    "Dear %%name%%,\n\nCafé news & more – “together”.\n\n"
    "Unsubscribe: %%unsubscribe_url%%\nPreferences: %%preferences_url%%\nSent to %%email%%"
)
# Names that need quoting, encoding or HTML escaping, and names that look like
# a provider's merge tags (they must arrive as typed, never substituted).
NAMES = [
    "Ann Lee", "", "Zoë Müller", "<b>Ann</b> & Co", 'Ann "Nan" Lee', "Lee, Ann", "山田 太郎",
    "%%email.html%%", "%recipient.email_html%", "-email-",
]


def sample_template(**changes):
    from newsletter.authoring.message import MessageTemplate, make_list_id

    fields = dict(
        subject="Together We’re Better – September 2021",
        html=HTML,
        text=TEXT,
        from_name="Together We're Better",
        from_email="news@example.org",
        reply_to="editor@example.org",
        domain="example.org",
        list_id=make_list_id("Together We're Better", "twb", "example.org"),
        feedback_id="7:all:twb:newsletter",
        return_path="news@example.org",
    )
    fields.update(changes)
    return MessageTemplate(**fields)


def sample_envelopes(count: int, template=None, start: int = 1):
    from newsletter.authoring.message import Recipient, make_message_id

    template = template or sample_template()
    envelopes = []
    for i in range(start, start + count):
        recipient = Recipient(
            email=f"reader{i}@example.com",
            name=NAMES[i % len(NAMES)],
            message_id=make_message_id("example.org", 7, i, "a1b2c3d4"),
            unsubscribe_url=f"https://newsletter.example.org/unsubscribe?send=7&reader={i}",
            preferences_url=f"https://newsletter.example.org/preferences?reader={i}&t=x",
            web_url="https://news.example.org/2021-09/",
        )
        envelopes.append(template.envelope(i, recipient))
    return envelopes


def assert_each_reader_sees_what_build_gives(envelopes, delivered: list[Delivered]) -> None:
    """Every recipient got one message, reading exactly like MessageTemplate.build's."""
    by_address = {}
    for d in delivered:
        by_address.setdefault(d.to_email, []).append(d)
    assert sorted(by_address) == sorted(e.recipient for e in envelopes)
    for envelope in envelopes:
        [got] = by_address[envelope.recipient]
        expected = view_of_message(envelope.template.build(envelope.person))
        assert got.seen() == expected.seen()
        for name, value in expected.headers.items():
            assert got.headers.get(name) == value, name

