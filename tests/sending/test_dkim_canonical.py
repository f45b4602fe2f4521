"""DKIM signatures made from a message's parts verify with three verifiers that share no code with ours.

dkimpy, OpenDKIM and Mail::DKIM (RSA only) check every signature: RSA,
Ed25519 and both at once, body canonicalisation relaxed and simple, on
messages a send builds (long, folded and non-ASCII headers, whitespace a
relaxed signature must forgive, a large body) and on hand-made messages with
empty bodies and bodies that end with and without blank lines.
"""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.authoring.message import MessageParts, MessageTemplate, Recipient, make_list_id, make_message_id
from newsletter.sending import dkim
from newsletter.sending.dkim_canonical import CanonicalMessage, split_message
from tests import dkim_verifiers
from tests.dkim_verifiers import assert_verified_everywhere

DOMAIN = "example.org"


@pytest.fixture(scope="module", autouse=True)
def verifiers():
    why = dkim_verifiers.missing()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def pems() -> dict[str, bytes]:
    def pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return {"rsa": pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ed25519": pem(ed25519.Ed25519PrivateKey.generate())}


@pytest.fixture(params=[(b"relaxed", b"relaxed"), (b"relaxed", b"simple")], ids=["relaxed-relaxed", "relaxed-simple"])
def canonicalize(request) -> tuple[bytes, bytes]:
    return request.param


@pytest.fixture
def signer(pems, canonicalize) -> dkim.Signer:
    """An RSA and an Ed25519 key at once, as a publication with both signs."""
    return dkim.Signer(tuple(dkim.DkimSigner(pems[k], f"sel-{k}", DOMAIN, canonicalize=canonicalize) for k in pems))


def records(signer: dkim.Signer) -> dict[str, str]:
    return {f"{key.selector.decode()}._domainkey.{DOMAIN}": key.dns_record() for key in signer.keys}


def template(**changes) -> MessageTemplate:
    fields = dict(
        subject="Together We’re Better – September 2021: a long subject that the header folds over several lines",
        html="<p>Dear %%name%%,</p>\n<p>Spaces   inside\tand after  \t</p>\n<a href=\"%%unsubscribe_url%%\">leave</a>\n",
        text="Dear %%name%%,  \n\n  indented\tand\t\ttabbed   \n%%unsubscribe_url%%\n\n\n\n",
        from_name="Zoë’s Partnership News", from_email=f"news@{DOMAIN}", reply_to=f"comms@{DOMAIN}",
        domain=DOMAIN, list_id=make_list_id("Ünïcode list", "twb", DOMAIN), feedback_id=f"7:twb:newsletter:{DOMAIN}",
        return_path=f"bounces@{DOMAIN}",
    )
    return MessageTemplate(**(fields | changes))


def recipient(name: str, number: int = 1, email: str = "") -> Recipient:
    return Recipient(email=email or f"reader{number}@example.net", name=name, message_id=make_message_id(DOMAIN, 7, number),
                     unsubscribe_url=f"https://newsletter.{DOMAIN}/u/{number}.abc", web_url=f"https://{DOMAIN}/2021-09/")


NAMES = ["", "Zoë Ångström-Łukasiewicz", "Ääkkönen " * 30]  # none, non-ASCII, folded over lines


@pytest.mark.parametrize("keys", [("rsa",), ("ed25519",), ("rsa", "ed25519")], ids=["rsa", "ed25519", "both"])
def test_messages_a_send_builds_verify_everywhere(pems, canonicalize, keys):
    signer = dkim.Signer(tuple(dkim.DkimSigner(pems[k], f"sel-{k}", DOMAIN, canonicalize=canonicalize) for k in keys))
    # Several recipients of one template: the shared pieces are canonicalised once and reused.
    built = template()
    for number, name in enumerate(NAMES, start=1):
        message = signer.sign_parts(built.parts(recipient(name, number)))
        assert_verified_everywhere(message, records(signer), len(keys))
    # A local part beyond ASCII goes in the To header as UTF-8 (RFC 6532): signed as the bytes it is.
    message = signer.sign_parts(built.parts(recipient("Zoë", 9, email="zoë.ångström@example.net")))
    assert "<zoë.ångström@example.net>".encode() in message.split(b"\r\n\r\n")[0]
    assert_verified_everywhere(message, records(signer), len(keys))


def test_a_large_body_verifies_everywhere(signer):
    line = "A line of a long issue,   with  spaces\tand a name: %%name%%  \n"
    large = template(text=line * 8_000, html=f"<p>{line}</p>\n" * 2_000)
    message = signer.sign_parts(large.parts(recipient("Zoë")))
    assert len(message) > 600_000
    assert_verified_everywhere(message, records(signer), 2)


HEAD = (b"From: =?utf-8?q?Zo=C3=AB?= <news@example.org>\r\n"
        b"To: reader@example.net\r\n"
        b"SUBJECT:   odd \t spacing,\r\n\tfolded with a tab\r\n   and with spaces  \r\n"
        b"Date: Sat, 05 Dec 2026 09:00:00 +0000\r\n"
        b"Message-ID: <m.1@example.org>\r\n"
        b"List-Unsubscribe: <https://newsletter.example.org/u/1>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"X-Not-Signed: " + b"x" * 900 + b"\r\n"
        b"\r\n")

BODIES = {
    "empty": b"",
    "one empty line": b"\r\n",
    "only empty lines": b"\r\n\r\n\r\n",
    "text": b"Text\r\n",
    "text then blank lines": b"Text\r\n\r\n\r\n",
    "whitespace at the ends": b"  Text  \t\r\n \r\n\t\r\n",
    "blank lines inside": b"\r\n\r\nText\r\n\r\nmore   text\r\n",
    "no final line break": b"Text\r\n  last line",
    "large": b"A line of text,  with   spaces\t\r\n" * 20_000 + b"\r\n\r\n",
}


def as_parts(message: bytes) -> MessageParts:
    """A whole message as parts, a line a piece, alternately shared and personal."""
    head, _, body = message.partition(b"\r\n\r\n")
    pieces = re.findall(rb"[^\n]*\n|[^\n]+$", body)
    if len(pieces) % 2 == 0:
        pieces.append(b"")
    return MessageParts(head + b"\r\n\r\n", tuple(pieces[0::2]), tuple(pieces[1::2]))


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_hand_made_messages_verify_everywhere_whole_and_in_parts(signer, body):
    message = HEAD + body
    assert_verified_everywhere(signer.sign(message), records(signer), 2)
    assert_verified_everywhere(signer.sign_parts(as_parts(message)), records(signer), 2)


def test_only_a_body_that_does_not_end_on_a_line_break_is_left_to_dkimpy():
    for name, body in BODIES.items():
        parts = as_parts(HEAD + body)
        canonical = CanonicalMessage(parts.head, parts.shared, parts.personal)
        declined = name == "no final line break"
        assert (split_message(HEAD + body) is None) == declined
        assert (canonical.body_hash(relaxed=True) is None) == declined


def test_the_body_hash_is_dkimpys(signer):
    for key in signer.keys:
        for body in BODIES.values():
            ours, theirs = key.signature(HEAD + body), key.signature_dkimpy(HEAD + body)
            assert re.search(rb"bh=([^;]+);", ours).group(1) == re.search(rb"bh=([^;]+);", theirs).group(1)


@pytest.mark.parametrize("change", [(b">leave</a>", b">stay</a>"), (b"\r\nSubject: ", b"\r\nSubject: Re: ")], ids=["body", "subject"])
def test_a_changed_message_fails_everywhere(signer, change):
    message = signer.sign_parts(template().parts(recipient("Ann")))
    changed = message.replace(*change, 1)
    assert changed != message
    assert dkim_verifiers.dkimpy_results(changed, records(signer)) == [False, False]
    assert dkim_verifiers.opendkim_results(changed, records(signer)) == ["fail", "fail"]
    assert [r for _, r in dkim_verifiers.mail_dkim_results(changed, records(signer))][:1] == ["fail"]
