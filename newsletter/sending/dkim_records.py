"""DKIM keys and their DNS records: make a key, say what to publish, and
check a published record against a key.

There is no DNS lookup here: ``record_differences`` is given the record (as
a zone-file line, a resolver's answer in quoted strings, or the bare value)
and says what differs from the key; an empty list means a receiver would
verify this key's signatures with it, which is checked at the end by signing
a message and verifying it with dkimpy against the record.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.crypto import UnparsableKeyError, parse_public_key
from dkim.util import InvalidTagValueList, parse_tag_value

from newsletter.errors import InputError, Problem
from newsletter.sending.dkim import ED25519, RSA, RSA_MIN_BITS, DkimSigner, dns_record, key_type

TXT_STRING_MAX = 255  # one character-string of a TXT record (RFC 1035); longer values are split
RSA_MAX_BITS = 4096


def generate_key(kind: str = RSA, bits: int = 2048):
    """A new private key: RSA of ``bits`` bits, or Ed25519."""
    if kind == ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if kind != RSA:
        raise InputError(Problem("--type", f"{kind!r} is not a DKIM key type", "use rsa or ed25519"))
    if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
        raise InputError(Problem("--bits", f"{bits} bits: RSA keys for DKIM are {RSA_MIN_BITS} to {RSA_MAX_BITS} bits",
                                 "use 2048"))
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private_key(path: Path, key) -> None:
    """Write the key readable by its owner only (0600); an existing file is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(Problem(str(path), "the file exists, and a key is never overwritten",
                                 "give another --out, or remove the old key yourself once DNS no longer publishes it")) from None
    except OSError as exc:
        raise InputError(Problem(str(path), f"cannot be created ({exc.strerror})",
                                 "check that the folder exists and that you may write to it")) from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(private_pem(key))
    except BaseException:
        path.unlink(missing_ok=True)  # never a half-written key
        raise


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def txt_strings(value: str) -> list[str]:
    """The record's value in strings of at most 255 characters; resolvers join them."""
    return [value[i:i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)] or [""]


def zone_line(selector: str, domain: str, key) -> str:
    """The record to publish, as a zone-file line: ``S._domainkey.D. IN TXT "v=DKIM1; ..."``."""
    strings = " ".join(f'"{part}"' for part in txt_strings(dns_record(key)))
    return f"{record_name(selector, domain)}. IN TXT {strings}"


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_published(text: str) -> tuple[str, str]:
    """(the owner name, if the text gives one; the record's value), from a
    zone-file line, a resolver's answer or the bare value."""
    text = text.strip()
    strings = _QUOTED.findall(text)
    if strings:
        value = "".join(re.sub(r"\\(.)", r"\1", s) for s in strings)
        head = text[:text.index('"')].replace("(", " ").split()
    else:
        value, head = text, []
        first = text.split(None, 1)
        if len(first) == 2 and "._domainkey." in first[0].lower():
            rest = first[1].split()
            while rest and (rest[0].upper() in ("IN", "TXT") or rest[0].isdigit()):
                rest.pop(0)
            head, value = [first[0]], " ".join(rest)
    name = next((word for word in head if "._domainkey." in word.lower()), "")
    return name.rstrip(".").lower(), value


def record_differences(key, selector: str, domain: str, published: str) -> list[str]:
    """What keeps the published record from verifying this key's signatures
    at selector._domainkey.domain; empty when it matches."""
    expected_name = record_name(selector, domain).lower()
    name, value = parse_published(published)
    differences = []
    if name and name != expected_name:
        differences.append(f"the record is published at {name}, but signatures with selector {selector} "
                           f"and domain {domain} are looked up at {expected_name}")
    try:
        tags = parse_tag_value(value.encode("ascii"))
    except (InvalidTagValueList, UnicodeEncodeError) as exc:
        return differences + [f"malformed record: not a list of tag=value pairs ({exc or 'non-ASCII text'})"]
    if not value.strip():
        return differences + ["malformed record: it is empty"]
    version = tags.get(b"v")
    if version is not None and version != b"DKIM1":
        differences.append(f"v={version.decode()}: a DKIM key record says v=DKIM1")
    kind = tags.get(b"k", b"rsa").decode()
    if kind not in (RSA, ED25519):
        differences.append(f"k={kind} is not a key type DKIM knows (rsa or ed25519)")
    elif kind != key_type(key):
        differences.append(f"wrong k=: the record says k={kind} but the key is {key_type(key)}")
    if b"p" not in tags:
        return differences + ["malformed record: it has no p= (the public key)"]
    p = re.sub(rb"\s+", b"", tags[b"p"])
    if not p:
        return differences + ["the record is revoked (p= is empty): publish the key's p= to use it again"]
    published_key = _decoded_public_key(p, kind)
    if published_key is None:
        differences.append(f"malformed record: p= is not a {kind} public key")
    elif kind == key_type(key) and published_key != _public_key_value(key):
        differences.append("p= is another key: the record publishes a different public key from this private key")
    if b"h" in tags and b"sha256" not in [h.strip() for h in tags[b"h"].split(b":")]:
        differences.append(f"h={tags[b'h'].decode()} does not allow sha256, the only hash we sign with")
    if b"s" in tags and not {s.strip() for s in tags[b"s"].split(b":")} & {b"*", b"email"}:
        differences.append(f"s={tags[b's'].decode()}: the key is not for email (s=email or leave s= out)")
    if not differences and not _verifies(key, selector, domain, value):
        differences.append("dkimpy does not verify a test signature with this record")
    return differences


def _public_key_value(key):
    public = key.public_key()
    if key_type(key) == ED25519:
        return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    numbers = public.public_numbers()
    return numbers.n, numbers.e


def _decoded_public_key(p: bytes, kind: str):
    try:
        raw = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        return None
    if kind == ED25519:
        return raw if len(raw) == 32 else None
    try:
        parsed = parse_public_key(raw)  # dkimpy's: SubjectPublicKeyInfo or a bare RSAPublicKey
    except (UnparsableKeyError, IndexError, TypeError, ValueError):
        return None
    return parsed["modulus"], parsed["publicExponent"]


def _verifies(key, selector: str, domain: str, value: str) -> bool:
    signer = DkimSigner(private_pem(key), selector, domain, where="key")
    message = (f"From: check@{domain}\r\nTo: check@{domain}\r\nSubject: DKIM record check\r\n"
               "\r\nThis message is signed and verified in memory only.\r\n").encode("ascii")
    wanted = f"{record_name(selector, domain)}.".lower().encode("ascii")

    def lookup(name, timeout=5):
        return value.encode("ascii") if name.lower() == wanted else None
    try:
        return bool(dkim.verify(signer.sign(message), dnsfunc=lookup))
    except dkim.DKIMException:
        return False
