"""DKIM signatures for mail we hand to an SMTP server ourselves.

Two key types: RSA (at least 1024 bits, 2048 recommended) and Ed25519
(RFC 8463); the type is read from the PEM. A publication may name several
keys (``KeySpec``): for each algorithm the one whose ``active_from`` is the
latest not after now signs, so a new selector takes over from an old one
without downtime, and with an RSA and an Ed25519 key active a message
carries two DKIM-Signature headers, one per algorithm.

A message is canonicalised and hashed by ``dkim_canonical`` from its parts
(``sign_parts``): the body every recipient shares once per send, the few
personalised bytes per message, and of the header only the signed fields;
the ``cryptography`` package (OpenSSL) then signs the header hash, RSA
PKCS#1 v1.5 or Ed25519. With two keys the message is canonicalised once.
dkimpy signs what that path declines (a message with a bare CR or LF, say)
and verifies every signature in the tests; ``bench/dkim_signing.py``
measures both. Keys are read once per process: ``signer_for(settings)`` and
each ``KeySpec`` are cached. No key material is ever logged or put in an
error message.

The signed headers include From, Subject, List-Unsubscribe and
List-Unsubscribe-Post, each signed once more than it occurs so that nobody
can add a second one on the way without breaking the signature.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from newsletter.authoring.message import MessageParts
from newsletter.config import ConfigError, Settings, read_secret
from newsletter.sending.dkim_canonical import CanonicalMessage, relaxed_field, split_message

SIGNED_HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "Reply-To", "MIME-Version", "Content-Type",
    "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Feedback-ID",
)
# Signed one extra time: a second copy added in transit fails verification.
OVERSIGNED = ("From", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post")
CANONICALIZE = (b"relaxed", b"relaxed")  # survives relays that re-fold headers or re-wrap lines (docs/dkim.md)

RSA, ED25519 = "rsa", "ed25519"  # the k= of the DNS record
KEY_TYPES = (RSA, ED25519)  # also the order of the signatures on a message
SIGNATURE_ALGORITHM = {RSA: b"rsa-sha256", ED25519: b"ed25519-sha256"}
RSA_MIN_BITS = 1024
_PKCS1 = padding.PKCS1v15()
_PREHASHED = utils.Prehashed(hashes.SHA256())
_FOLD_AT = 76  # a signature header's lines stay under 78 octets

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _at(where: str, field: str) -> str:
    return f"{where}, {field}" if where else field


def check_selector(selector: str, where: str) -> str:
    """The selector, or an error: a DNS label (letters, digits, hyphens; at
    most 63), or several joined by dots as RFC 6376 allows."""
    if not selector or not all(_LABEL.match(part) for part in selector.split(".")):
        raise ConfigError(f"{where}: {selector!r} is not a DNS label: a selector is letters, digits and "
                          "hyphens (not at either end), at most 63 of them, such as news2026")
    return selector


def check_domain(domain: str, where: str) -> str:
    """The d= domain in lower case, or an error."""
    domain = domain.strip().rstrip(".").lower()
    parts = domain.split(".")
    if len(parts) < 2 or len(domain) > 253 or not all(_LABEL.match(part) for part in parts):
        raise ConfigError(f"{where}: {domain!r} is not a domain name: give the domain the signature "
                          "speaks for, such as example.org (international names in their xn-- form)")
    return domain


def private_key_from_pem(pem: bytes, where: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """An RSA or Ed25519 private key from unencrypted PEM, or an error naming ``where``."""
    if b"PUBLIC KEY-----" in pem and b"PRIVATE KEY-----" not in pem:
        raise ConfigError(f"{where}: this is a public key; give the private key (the public one goes in DNS)")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(f"{where}: the private key is encrypted; give it unencrypted "
                          "(a mounted secret readable only by this service)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: not a PEM private key (expected '-----BEGIN PRIVATE KEY-----'; "
                          "`newsletter dkim keygen` makes one)") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_BITS:
            raise ConfigError(f"{where}: an RSA key of {key.key_size} bits is too short: "
                              f"at least {RSA_MIN_BITS} bits (2048 recommended)")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError(f"{where}: unsupported key type ({type(key).__name__.removeprefix('_')}): "
                      "DKIM keys are RSA (2048 bits recommended) or Ed25519")


def key_type(key) -> str:
    return ED25519 if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)) else RSA


def public_key_base64(key) -> str:
    """The p= of the DNS record: SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519 (RFC 8463)."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if key_type(public) == ED25519:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(raw).decode("ascii")


def dns_record(key) -> str:
    """The TXT record's value for a key: ``v=DKIM1; k=...; p=...``."""
    return f"v=DKIM1; k={key_type(key)}; p={public_key_base64(key)}"


class _OpenSslDKIM(dkim.DKIM):
    """dkimpy's signer with the RSA signature made by OpenSSL.

    dkimpy has no hook for another RSA implementation, so this repeats its
    ``gen_header`` (dkimpy 1.1) for RSA-SHA256 with one change: the signing
    call. The tests verify every signature with dkimpy's own verifier.
    """

    def __init__(self, message: bytes, key: rsa.RSAPrivateKey):
        super().__init__(message)
        self._key = key

    def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = dkim.fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        header = (header_name, b" " + header_value)
        h = dkim.HashThrough(self.hasher(), self.debug_content)
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(h, canon_policy, headers, include_headers, header, dict(fields))
        signature = self._key.sign(h.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        index = next(i for i, (name, _) in enumerate(fields) if name == b"b")
        fields[index] = (b"b", base64.b64encode(signature))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep)


class DkimSigner:
    """Signs messages for one domain and selector with one key (RSA or Ed25519), read once."""

    def __init__(self, private_key_pem: bytes, selector: str, domain: str = "", where: str = "DKIM_PRIVATE_KEY_PATH",
                 canonicalize: tuple[bytes, bytes] = CANONICALIZE):
        self.key = private_key_from_pem(private_key_pem, where)
        self.key_type = key_type(self.key)
        if self.key_type == RSA:
            self.pem = private_key_pem  # dkimpy parses it (a cheap step); the RSA work is ours
        else:  # dkimpy signs Ed25519 itself, from the 32-byte seed in base64
            seed = self.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())
            self.pem = base64.b64encode(seed)
        self.selector = selector.encode("ascii")
        self.domain = domain.lower()
        if canonicalize not in ((b"relaxed", b"relaxed"), (b"relaxed", b"simple")):
            raise ValueError(f"canonicalize: relaxed/relaxed or relaxed/simple, not {b'/'.join(canonicalize)!r}")
        self.canonicalize = canonicalize
        self._relaxed_body = canonicalize[1] == b"relaxed"
        self._names = tuple(self.headers_to_sign())
        self._h_tag = _fold_list(self._names)
        self._prefixes: dict[bytes, bytes] = {}

    def __repr__(self) -> str:  # never the key
        return f"<DkimSigner {self.key_type} {self.selector.decode()}._domainkey.{self.domain or '(From domain)'}>"

    def headers_to_sign(self) -> list[bytes]:
        return [h.lower().encode() for h in SIGNED_HEADERS + OVERSIGNED]

    def signature(self, message: bytes, domain: str = "") -> bytes:
        """The DKIM-Signature header (ending in CRLF) for the message."""
        split = split_message(message)
        if split is not None:
            header = self.signature_of(CanonicalMessage(split[0], (b"", b""), (split[1],)), domain)
            if header is not None:
                return header
        return self.signature_dkimpy(message, domain)

    def signature_of(self, message: CanonicalMessage, domain: str = "") -> bytes | None:
        """The DKIM-Signature header (ending in CRLF) for a message canonicalised
        in parts, or None when its parts cannot be (``dkim_canonical``)."""
        body_hash = message.body_hash(self._relaxed_body)
        if body_hash is None:
            return None
        unsigned = b"".join((self._prefix((self.domain or domain).encode("ascii")),
                             str(int(time.time())).encode("ascii"), b";\r\n ", self._h_tag,
                             b";\r\n bh=", body_hash, b";\r\n b="))
        digest = hashlib.sha256(message.signed_fields(self._names))
        digest.update(relaxed_field(unsigned)[1])  # the signature's own field, b= empty, no CRLF
        if self.key_type == RSA:
            signature = self.key.sign(digest.digest(), _PKCS1, _PREHASHED)
        else:  # RFC 8463: Ed25519 signs the SHA-256 of the header
            signature = self.key.sign(digest.digest())
        encoded = base64.b64encode(signature)
        first = _FOLD_AT - 3
        lines = [encoded[:first]] + [encoded[i:i + _FOLD_AT - 1] for i in range(first, len(encoded), _FOLD_AT - 1)]
        return unsigned + b"\r\n ".join(lines) + b"\r\n"

    def _prefix(self, domain: bytes) -> bytes:
        prefix = self._prefixes.get(domain)
        if prefix is None:
            prefix = self._prefixes[domain] = (
                b"DKIM-Signature: v=1; a=" + SIGNATURE_ALGORITHM[self.key_type] + b"; c=" + b"/".join(self.canonicalize)
                + b"; d=" + domain + b"; s=" + self.selector + b";\r\n t=")
        return prefix

    def sign(self, message: bytes, domain: str = "") -> bytes:
        """The message with a DKIM-Signature header in front."""
        return self.signature(message, domain) + message

    def sign_parts(self, parts: MessageParts, domain: str = "") -> bytes:
        """The message made of ``parts``, with a DKIM-Signature header in front."""
        return Signer((self,)).sign_parts(parts, domain)

    def signature_dkimpy(self, message: bytes, domain: str = "") -> bytes:
        """The signature made by dkimpy's canonicalisation, with OpenSSL's RSA:
        for messages the parts path declines, and the yardstick it is measured against."""
        d = (self.domain or domain).encode("ascii")
        if self.key_type == RSA:
            signer = _OpenSslDKIM(message, self.key)
        else:
            signer = dkim.DKIM(message, signature_algorithm=SIGNATURE_ALGORITHM[ED25519])
        return signer.sign(self.selector, d, self.pem, canonicalize=self.canonicalize,
                           include_headers=list(self._names))

    def sign_reference(self, message: bytes, domain: str = "") -> bytes:
        """The same signature made by dkimpy alone (pure-Python RSA): the yardstick."""
        header = dkim.sign(message, self.selector, (self.domain or domain).encode("ascii"), self.pem,
                           signature_algorithm=SIGNATURE_ALGORITHM[self.key_type],
                           canonicalize=self.canonicalize, include_headers=list(self._names))
        return header + message

    def dns_record(self) -> str:
        """The TXT record to publish at <selector>._domainkey.<domain>."""
        return dns_record(self.key)


def _fold_list(names: tuple[bytes, ...]) -> bytes:
    """``h=`` and the names joined by colons, on a line of its own (after a
    space), folded after a colon before a line would pass _FOLD_AT."""
    out, line = [b"h=" + names[0]], 3 + len(names[0])
    for name in names[1:]:
        if line + 1 + len(name) > _FOLD_AT:
            out.append(b":\r\n " + name)
            line = 1 + len(name)
        else:
            out.append(b":" + name)
            line += 1 + len(name)
    return b"".join(out)


class Signer:
    """Signs with the keys active at one moment, at most one per key type:
    each adds its own DKIM-Signature header, RSA first."""

    def __init__(self, keys: tuple[DkimSigner, ...]):
        self.keys = keys

    def __repr__(self) -> str:
        return f"<Signer {', '.join(map(repr, self.keys))}>"

    def sign(self, message: bytes, domain: str = "") -> bytes:
        """The message with one DKIM-Signature header per key in front."""
        # Each signs the message as it is: DKIM-Signature is never a signed header.
        return b"".join(key.signature(message, domain) for key in self.keys) + message

    def sign_parts(self, parts: MessageParts, domain: str = "") -> bytes:
        """The message made of ``parts`` with one DKIM-Signature header per key in
        front, canonicalised once for all of them."""
        canonical = CanonicalMessage(parts.head, parts.shared, parts.personal)
        headers = [key.signature_of(canonical, domain) for key in self.keys]
        if any(header is None for header in headers):
            return self.sign(parts.message(), domain)
        return parts.message(b"".join(headers))


@dataclass(frozen=True)
class KeySpec:
    """One DKIM key a publication names, and from when it signs."""

    selector: str
    domain: str  # the d= domain
    key_file: str = ""  # a PEM file (mounted secret), or
    key_env: str = ""  # the name of an environment variable holding the PEM
    active_from: datetime | None = None  # aware UTC; None: active from the start
    where: str = ""  # who configured it, for errors: "publication 'x', sending.dkim[2]"


def signer_for_keys(specs: tuple[KeySpec, ...], now: datetime) -> Signer | None:
    """What signs a message at ``now``: for each key type, the key with the
    latest ``active_from`` not after ``now`` (None counts as the start of
    time). Older keys of that type sign nothing from then on; a key whose
    ``active_from`` is still ahead signs nothing yet. None when no key is
    active. Every spec is read and checked, active or not, so a bad one is
    found when it is configured, not when its time comes. Keys are cached
    per spec, so calling this for every batch (or message) costs little."""
    if now.tzinfo is None:
        raise ValueError("signer_for_keys: now must be an aware datetime (UTC)")
    loaded = [(spec, _signer_for_spec(spec)) for spec in specs]
    seen: dict[tuple[str, datetime | None], KeySpec] = {}
    for spec, signer in loaded:
        earlier = seen.setdefault((signer.key_type, spec.active_from), spec)
        if earlier is not spec:
            when = spec.active_from.isoformat() if spec.active_from else "the start (no active_from)"
            raise ConfigError(f"{_at(spec.where, 'active_from')}: two {signer.key_type} keys are active from {when} "
                              f"(this one and {earlier.where or repr(earlier.selector)}): give the newer key a "
                              "later active_from, so that one key of a type signs at any moment")
    active: dict[str, tuple[datetime | None, DkimSigner]] = {}
    for spec, signer in loaded:
        start = spec.active_from
        if start is not None and start > now:
            continue
        current = active.get(signer.key_type)
        if current is None or (start is not None and (current[0] is None or start > current[0])):
            active[signer.key_type] = (start, signer)
    if not active:
        return None
    return Signer(tuple(active[kind][1] for kind in KEY_TYPES if kind in active))


@lru_cache(maxsize=64)
def _signer_for_spec(spec: KeySpec) -> DkimSigner:
    selector = check_selector(spec.selector, _at(spec.where, "selector"))
    domain = check_domain(spec.domain, _at(spec.where, "domain")) if spec.domain else ""
    if spec.active_from is not None and spec.active_from.tzinfo is None:
        raise ConfigError(f"{_at(spec.where, 'active_from')}: {spec.active_from.isoformat()} has no time zone: "
                          "write it in UTC, such as 2026-12-01T09:00:00Z")
    field = "key_env" if spec.key_env else "key_file"
    pem = read_secret(env_name=spec.key_env, file=spec.key_file, where=_at(spec.where, field))
    if "\\n" in pem and "\n" not in pem.strip():  # a PEM put in one line of an env file
        pem = pem.replace("\\n", "\n")
    detail = f"{field} {spec.key_env or spec.key_file}"
    return DkimSigner(pem.encode("ascii", "replace") + b"\n", selector, domain, where=_at(spec.where, detail))


def signer_for(settings: Settings) -> DkimSigner | None:
    """The process's signer from the environment defaults (DKIM_PRIVATE_KEY_PATH,
    DKIM_SELECTOR, DKIM_DOMAIN), or None when DKIM signing is not configured."""
    if not settings.dkim_private_key_path:
        return None
    return _load(settings.dkim_private_key_path, settings.dkim_selector, settings.dkim_domain)


@lru_cache(maxsize=4)
def _load(path: str, selector: str, domain: str) -> DkimSigner:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"DKIM_PRIVATE_KEY_PATH={path}: {exc.strerror}") from None
    return DkimSigner(pem, selector, domain)
