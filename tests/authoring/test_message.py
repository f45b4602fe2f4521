from __future__ import annotations

import base64
import html
import re
from email import policy
from email.message import EmailMessage
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path

import pytest

from newsletter.authoring import placeholders
from newsletter.errors import InputError
from newsletter.authoring.message import (
    GREETING_FALLBACK,
    PROOF_PREFIX,
    MessageTemplate,
    Recipient,
    build_reference,
    make_list_id,
    make_message_id,
)

SAMPLE_ISSUE = Path(__file__).resolve().parent.parent.parent / "examples" / "together-were-better" / "issues" / "2021-09"
DOMAIN = "example.org"
PARAGRAPH = (
    '<p style="margin:0 0 16px;font-family:Arial,sans-serif">Since being formally established as an '
    "Integrated Care System on 1 April 2021, all our partners – “together” – have been involved in "
    "supporting our transition. Services &amp; people come first.</p>\n"
)
# Shaped like a compiled issue: one very long line, placeholders at the very
# start, side by side, inside attributes, and at the very end.
HTML = (
    "%%name%%<html><body><p>Dear %%name%%,</p>" + PARAGRAPH * 40 + "<div>" + "x" * 3000 + "</div>"
    '<a href="%%web_url%%">View in a browser</a> %%email%%%%name%%'
    '<a href="%%preferences_url%%">Preferences</a> <a href="%%unsubscribe_url%%">Unsubscribe</a>'
    "</body></html>%%name%%"
)
TEXT = (
    "Dear %%name%%,\n\n"
    + "Since being formally established – as an ICS – we have worked together.   \n" * 30
    + "View in a browser: %%web_url%%\nPreferences: %%preferences_url%%\n"
    "Unsubscribe: %%unsubscribe_url%%\nSent to %%email%%"
)

NAMES = [
    "Ann Lee",
    "",
    "Zoë Müller",
    "Łukasz Żółć",
    "山田 太郎",
    "Ann 🎉 Lee",
    "Lee, Ann",
    'Ann "Nan" Lee',
    "Siobhán O'Brien, MBE",
    "back\\slash",
    "J. R. Smith",
    "<b>Ann</b> & Co",
    "  Ann \t  Lee  ",
    "=" * 120,
    "Ann Lee " * 30,
    "Zoë " * 40,
    '"Lee, Ann" ' * 25,
    "Zoë Müller, ‘Nan’ " * 25,
]


# Typed text that looks like an RFC 2047 encoded word. email.message writes it
# as is, so readers decode it to "Ann"; the fast builder encodes it, so it reads
# back as typed. Tested on its own below rather than against the reference.
ENCODED_WORD_LOOKALIKE = "=?utf-8?q?Ann?="


def make_template(**changes) -> MessageTemplate:
    fields = dict(
        subject="Together We’re Better – September 2021",
        html=HTML,
        text=TEXT,
        from_name="Together We're Better, the partnership",
        from_email=f"news@{DOMAIN}",
        reply_to=f"comms@{DOMAIN}",
        domain=DOMAIN,
        list_id=make_list_id("Together We're Better", "twb", DOMAIN),
        feedback_id=f"7:twb:newsletter:{DOMAIN}",
        return_path=f"bounces@{DOMAIN}",
    )
    fields.update(changes)
    return MessageTemplate(**fields)


def make_recipient(name: str = "Ann Lee", **changes) -> Recipient:
    fields = dict(
        email="ann.lee+news@example.net",
        name=name,
        message_id=make_message_id(DOMAIN, 7, 42),
        unsubscribe_url="https://newsletter.example.org/u/WzcsNDJd.x-Y_z?a=1&b=2",
        preferences_url="https://newsletter.example.org/p/NDI.abc",
        web_url=f"https://{DOMAIN}/twb/2021-09/",
    )
    fields.update(changes)
    return Recipient(**fields)


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)


def headers_but_date_and_boundary(msg: EmailMessage) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in msg.items() if k not in ("Date", "Content-Type")]


def shown_name(name: str) -> str:
    return " ".join(name.split()) or GREETING_FALLBACK


TEMPLATES = {
    "issue": make_template(),
    "proof with mailto": make_template(subject_prefix=PROOF_PREFIX, unsubscribe_mailto=f"leave@{DOMAIN}"),
    "ascii, no reply-to, no feedback id": make_template(
        subject="September news", from_name="News", reply_to="", feedback_id=""
    ),
    "no placeholders in text": make_template(text="Plain text without personal values."),
}


@pytest.mark.parametrize("template", TEMPLATES.values(), ids=TEMPLATES.keys())
@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_fast_message_reads_the_same_as_the_reference(template, name):
    recipient = make_recipient(name)
    fast, reference = parse(template.build(recipient)), parse(build_reference(template, recipient))

    assert headers_but_date_and_boundary(fast) == headers_but_date_and_boundary(reference)
    assert fast.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in fast.iter_parts()] == ["text/plain", "text/html"]
    for fast_part, reference_part in zip(fast.iter_parts(), reference.iter_parts()):
        assert fast_part.get_content_charset() == "utf-8"
        assert fast_part["Content-Transfer-Encoding"] == "quoted-printable"
        assert fast_part.get_content() == reference_part.get_content()
    assert not fast.defects and not any(p.defects for p in fast.iter_parts())


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_personal_values_are_escaped_in_html_and_plain_in_text(name):
    recipient = make_recipient(name)
    msg = parse(make_template().build(recipient))
    text, body_html = msg.get_body("plain").get_content(), msg.get_body("html").get_content()
    text = text.replace("\r\n", "\n")  # quoted-printable's hard line breaks are CRLF

    assert f"Dear {shown_name(name)},\n" in text
    assert f"Sent to {recipient.email}" in text
    assert f"Unsubscribe: {recipient.unsubscribe_url}\n" in text
    assert f"<p>Dear {html.escape(shown_name(name))},</p>" in body_html
    assert f'href="{html.escape(recipient.unsubscribe_url)}"' in body_html
    assert f'href="{html.escape(recipient.web_url)}"' in body_html
    assert placeholders.find(text) == [] and placeholders.find(body_html) == []
    if name != "=" * 120:  # that one looks like a placeholder's delimiters, so check it apart
        assert "%%" not in text and "%%" not in body_html


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_wire_format_is_crlf_with_short_lines(name):
    raw = make_template().build(make_recipient(name, unsubscribe_url="https://example.org/u/" + "a=b&" * 140))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # quoted-printable's own limit
    assert raw.isascii()


def test_name_that_looks_like_an_encoded_word_reads_back_as_typed():
    msg = parse(make_template().build(make_recipient(ENCODED_WORD_LOOKALIKE)))
    assert msg["To"].addresses[0].display_name == ENCODED_WORD_LOOKALIKE
    assert f"Dear {ENCODED_WORD_LOOKALIKE}," in msg.get_body("plain").get_content()


def test_recipient_headers():
    recipient = make_recipient("Zoë Müller")
    msg = parse(make_template(unsubscribe_mailto=f"leave@{DOMAIN}").build(recipient))

    assert msg["To"].addresses[0].display_name == "Zoë Müller"
    assert msg["To"].addresses[0].addr_spec == recipient.email
    assert msg["From"].addresses[0].display_name == "Together We're Better, the partnership"
    assert msg["Reply-To"] == f"comms@{DOMAIN}"
    assert msg["Subject"] == "Together We’re Better – September 2021"
    assert msg["List-Unsubscribe"] == f"<{recipient.unsubscribe_url}>, <mailto:leave@{DOMAIN}?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == f"Together We're Better <twb.{DOMAIN}>"
    assert msg["Feedback-ID"] == f"7:twb:newsletter:{DOMAIN}"
    assert msg["Precedence"] == "bulk"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime.tzinfo is not None
    assert "Auto-Submitted" not in msg and "X-Entity-Ref-ID" not in msg


@pytest.mark.parametrize("list_name", [
    "Everyone <b>list</b>",
    'The "inner" circle',
    "Zoë's list <everyone@example.net>",
    "News, views; and more: (all) [of it] \\ too",
    "Bulletin – " + "very long name " * 8 + "end",
])
@pytest.mark.parametrize("build", [MessageTemplate.build, build_reference], ids=["fast", "reference"])
def test_the_list_id_phrase_is_quoted_or_encoded_so_the_id_is_unambiguous(list_name, build):
    raw = build(make_template(list_id=make_list_id(list_name, "everyone", DOMAIN)), make_recipient())

    # Read the header back as a list server or mail filter would: raw, unfolded, as a phrase and an id.
    value = re.sub(r"\r?\n[ \t]", " ", BytesParser(policy=policy.compat32).parsebytes(raw)["List-Id"])
    [(phrase, list_id)] = getaddresses([value])
    assert list_id == f"everyone.{DOMAIN}"
    assert str(make_header(decode_header(phrase))) == list_name


def test_non_ascii_subject_is_rfc2047_encoded_on_the_wire():
    raw = make_template().build(make_recipient())
    subject_line = re.search(rb"^Subject: .*?\r\n(?! )", raw, re.M | re.S).group(0)
    assert b"=?utf-8?" in subject_line


def test_unknown_name_gets_the_greeting_fallback_and_a_bare_address():
    recipient = make_recipient("")
    msg = parse(make_template().build(recipient))
    assert msg["To"] == recipient.email
    assert f"Dear {GREETING_FALLBACK}," in msg.get_body("plain").get_content()


def test_proof_subject_is_marked():
    msg = parse(make_template(subject_prefix=PROOF_PREFIX).build(make_recipient()))
    assert msg["Subject"] == "[PROOF] Together We’re Better – September 2021"


def test_message_id_is_on_the_domain_unique_per_delivery_and_stable_on_retry():
    first = make_message_id(DOMAIN, 7, 42)
    assert first == make_message_id(DOMAIN, 7, 42)
    assert len({first, make_message_id(DOMAIN, 7, 43), make_message_id(DOMAIN, 8, 42)}) == 3
    assert first.startswith("<") and first.endswith(f"@{DOMAIN}>")

    template, recipient = make_template(), make_recipient(message_id=first)
    ids = {parse(template.build(recipient))["Message-ID"] for _ in range(2)}
    assert ids == {first}


def test_envelope_carries_the_return_path_and_message():
    template, recipient = make_template(), make_recipient()
    envelope = template.envelope(42, recipient)
    assert (envelope.delivery_id, envelope.sender, envelope.recipient) == (42, f"bounces@{DOMAIN}", recipient.email)
    assert envelope.message_id == recipient.message_id
    assert parse(envelope.message)["Message-ID"] == recipient.message_id


def _encoded(text: str, encoding: str) -> str:
    if encoding == "b":
        return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="
    return "=?utf-8?q?" + text.replace("\r", "=0D").replace("\n", "=0A").replace(" ", "_") + "?="


INJECTED_NAMES = [
    "Ann\r\nBcc: victim@example.com",
    "Ann\nBcc: victim@example.com",
    "Ann\rBcc: victim@example.com",
    "Ann\u2028Bcc: victim@example.com",
    "Ann\x00",
    _encoded("Ann\r\nBcc: victim@example.com", "q"),
    _encoded("Ann\nBcc: victim@example.com", "b"),
]
INJECTED_ADDRESSES = [
    "ann@example.net\r\nBcc: victim@example.com",
    "ann@example.net\nBcc: victim@example.com",
    "ann%0d%0abcc@example.net",
    "Ann <ann@example.net>",
]


@pytest.mark.parametrize("builder", [MessageTemplate.build, build_reference], ids=["fast", "reference"])
@pytest.mark.parametrize("name", INJECTED_NAMES)
def test_header_injection_in_a_name_is_refused(builder, name):
    with pytest.raises(InputError) as caught:
        builder(make_template(), make_recipient(name))
    assert [p.where for p in caught.value.problems] == ["field name"]


@pytest.mark.parametrize("builder", [MessageTemplate.build, build_reference], ids=["fast", "reference"])
@pytest.mark.parametrize("email", INJECTED_ADDRESSES)
def test_header_injection_in_an_address_is_refused(builder, email):
    with pytest.raises(InputError) as caught:
        builder(make_template(), make_recipient(email=email))
    assert [p.where for p in caught.value.problems] == ["field email"]


@pytest.mark.parametrize(
    "field_name, value",
    [
        ("subject", "September\r\nBcc: victim@example.com"),
        ("subject", _encoded("September\nBcc: victim@example.com", "b")),
        ("from_name", "News\nBcc: victim@example.com"),
        ("from_email", "news@example.org\r\nBcc: victim@example.com"),
        ("reply_to", "comms@example.org\nBcc: victim@example.com"),
        ("list_id", "News <twb.example.org>\r\nBcc: victim@example.com"),
        ("return_path", "bounces@example.org\n"),
    ],
)
def test_header_injection_in_the_template_is_refused(field_name, value):
    with pytest.raises(InputError) as caught:
        make_template(**{field_name: value})
    assert [p.where for p in caught.value.problems] == [f"field {field_name}"]


def test_prefix_cannot_smuggle_a_line_break_into_the_subject():
    with pytest.raises(InputError) as caught:
        make_template(subject_prefix="[PROOF]\r\nBcc: victim@example.com ")
    assert caught.value.problems[0].where == "field subject"


@pytest.mark.parametrize("url", ["https://example.org/u/a b", "https://example.org/u/a>\r\nBcc: x", ""])
def test_unusable_unsubscribe_link_is_refused(url):
    with pytest.raises(InputError) as caught:
        make_template().build(make_recipient(unsubscribe_url=url))
    assert caught.value.problems[0].where == "field unsubscribe_url"


def test_unknown_placeholder_is_refused_naming_the_part():
    with pytest.raises(InputError) as caught:
        make_template(html="<p>Hello %%first_name%%</p>")
    problem = caught.value.problems[0]
    assert problem.where == "field html" and "%%first_name%%" in problem.message


def test_every_problem_is_reported_at_once():
    with pytest.raises(InputError) as caught:
        make_template(subject="", from_email="not an address", domain="bad domain")
    assert {p.where for p in caught.value.problems} == {"field subject", "field from_email", "field domain"}


def test_one_template_serves_many_recipients_without_mixing_them():
    template = make_template()
    people = [make_recipient(f"Person {i}", email=f"p{i}@example.net",
                             message_id=make_message_id(DOMAIN, 7, i)) for i in range(5)]
    for person in people:
        msg = parse(template.build(person))
        text = msg.get_body("plain").get_content()
        assert msg["To"].addresses[0].addr_spec == person.email
        assert f"Dear {person.name}," in text
        others = [p.name for p in people if p is not person]
        assert not any(f"Dear {other}," in text for other in others)


def test_template_is_unchanged_by_building():
    template = make_template()
    first = template.build(make_recipient("Zoë"))
    template.build(make_recipient("Someone Else", email="else@example.net"))
    again = template.build(make_recipient("Zoë"))
    # Only the Date line may differ between the two builds of the same message.
    strip_date = lambda raw: re.sub(rb"^Date: [^\r]*\r\n", b"", raw, flags=re.M)  # noqa: E731
    assert strip_date(first) == strip_date(again)


def test_the_sample_issue_reads_the_same_as_the_reference():
    from newsletter.authoring.content import load_issue
    from newsletter.authoring.render import render_issue

    rendered = render_issue(load_issue(SAMPLE_ISSUE))
    template = make_template(subject=rendered.issue.subject, html=rendered.html, text=rendered.text)
    recipient = make_recipient("Siobhán O'Brien")
    fast, reference = parse(template.build(recipient)), parse(build_reference(template, recipient))

    assert headers_but_date_and_boundary(fast) == headers_but_date_and_boundary(reference)
    for fast_part, reference_part in zip(fast.iter_parts(), reference.iter_parts(), strict=True):
        assert fast_part.get_content() == reference_part.get_content()
    body_html = fast.get_body("html").get_content()
    assert html.escape(recipient.unsubscribe_url) in body_html
    assert placeholders.find(body_html) == []


DOTTED_TEXT = (
    ".A line that starts with a dot.\n"
    ".\n"
    "..two dots, and a line of dots as long as a line can be:\n"
    + "." * 90 + "\n"
    "Dear %%name%%.\n"  # the piece after a placeholder starts a line of its own
    "%%name%%\n"
)
DOTTED_NAMES = [".Ann", "..", "." * 80, "Ann Lee"]


@pytest.mark.parametrize("name", DOTTED_NAMES)
def test_no_line_starts_with_a_dot_and_the_text_reads_as_written(name):
    template = make_template(text=DOTTED_TEXT, html="<p>" + DOTTED_TEXT.replace("\n", "</p>\n<p>") + "</p>")
    recipient = make_recipient(name)
    envelope = template.envelope(1, recipient)
    raw = envelope.message

    # What SMTP would have to dot-stuff is not there, so it sends the message unscanned.
    assert not raw.startswith(b".") and b"\n." not in raw
    assert envelope.dot_free
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    fast, reference = parse(raw), parse(build_reference(template, recipient))
    for fast_part, reference_part in zip(fast.iter_parts(), reference.iter_parts()):
        assert fast_part.get_content() == reference_part.get_content()
    assert f"Dear {name}.\n" in fast.get_body("plain").get_content().replace("\r\n", "\n")
