"""Counted links: an issue's outside links, rewritten to a short signed redirect.

Takes in a send's compiled HTML and text (with their placeholders) and hands
on the same parts with every outside link replaced by
``<base_url>/c/<token>?m=%%click_ref%%``, plus the list of links (``Link``:
number, address, section). Rewriting runs once per send in each worker, never
per recipient; per recipient only ``click_ref`` is made (``ClickRefs``): a
random nonce and the second the message was made, a few characters.

A token names the send, the link's number and its address, and is signed
with the install's keys (``SECRET_KEYS``; the newest signs, all verify). It
holds nothing about the person: no id, no address, nothing made from them.
Because the address is in the signed token, the web app redirects without
asking the database, and only to addresses this module wrote into an issue:
a tampered token, or one made for another address, is refused (no open
redirect).

Not rewritten: the unsubscribe, preferences and "view it as a web page"
links (placeholders, filled per recipient), ``mailto:`` and anything that is
not http(s). Every HTML part also gets one link nobody can see or follow
(link number 0, the trap): a client that fetches it is a machine. The rules
that class clicks are in ``feedback/clicks.py`` and ``docs/clicks.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html as html_lib
import re
import os
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from newsletter.authoring.sending_block import CLICKS_PER_PERSON

TRAP = 0  # the link number of the link no person can see
PATH = "/c/"
REF_PLACEHOLDER = "%%click_ref%%"
MAX_TOKEN_LENGTH = 3000  # a longer path is refused before any work
MAX_REF_LENGTH = 80
_SIGNATURE_BYTES = 12  # 96 bits: forging one is out of reach, and the link stays short
_REF_SIGNATURE_BYTES = 8

_HREF = re.compile(r"(<a\b[^>]*?\bhref=)\"([^\"]*)\"", re.IGNORECASE)
_HEADING = re.compile(r"<h2\b[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_TEXT_URL = re.compile(r"https?://[^\s<>\"]+")
_BODY_END = re.compile(r"</body>", re.IGNORECASE)
_TRAILING = ".,;:!?'"


@dataclass(frozen=True)
class Link:
    """One outside link of an issue, numbered from 1 in the order it first appears."""

    number: int
    url: str
    section: str  # the title of the section it is in ("" above the first)


@dataclass(frozen=True)
class ClickToken:
    """What a counted link's token says."""

    send_id: int
    link: int  # TRAP or a Link.number
    url: str  # "" for the trap


# --- finding and rewriting links --------------------------------------------------------


def outside_url(url: str) -> bool:
    """True for a link that is counted: http(s), not a per-recipient placeholder."""
    return url.startswith(("https://", "http://")) and "%%" not in url


def issue_links(html: str, text: str) -> list[Link]:
    """Every counted link of an issue, in order, each address once (what results list)."""
    found: dict[str, Link] = {}
    headings = [(m.start(), _plain(m.group(1))) for m in _HEADING.finditer(html)]
    for match in _HREF.finditer(html):
        url = html_lib.unescape(match.group(2))
        if outside_url(url) and url not in found:
            found[url] = Link(len(found) + 1, url, _section_at(headings, match.start()))
    for url in _text_urls(text):
        if url not in found:
            found[url] = Link(len(found) + 1, url, "")
    return list(found.values())


def rewrite(html: str, text: str, *, keys: tuple[str, ...], base_url: str, send_id: int) -> tuple[str, str, list[Link]]:
    """The HTML and text with every counted link going through the redirect, the trap
    link added to the HTML, and the links. Pure: the same input gives the same output."""
    links = issue_links(html, text)
    by_url = {link.url: link for link in links}
    signer = _signer(keys)
    redirect = {link.url: _redirect_url(signer, base_url, send_id, link.number, link.url) for link in links}

    def in_html(match: re.Match) -> str:
        url = html_lib.unescape(match.group(2))
        if url not in by_url:
            return match.group(0)
        return f'{match.group(1)}"{html_lib.escape(redirect[url], quote=True)}"'

    new_html = _HREF.sub(in_html, html)
    trap = (f'<a href="{html_lib.escape(_redirect_url(signer, base_url, send_id, TRAP, ""), quote=True)}" '
            'style="display:none;font-size:0;line-height:0;max-height:0;mso-hide:all" aria-hidden="true" '
            'tabindex="-1"></a>')
    end = _BODY_END.search(new_html)
    new_html = new_html[:end.start()] + trap + new_html[end.start():] if end else new_html + trap
    new_text = _TEXT_URL.sub(lambda m: _text_replacement(m.group(0), redirect), text)
    return new_html, new_text, links


def _redirect_url(signer: "_Signer", base_url: str, send_id: int, number: int, url: str) -> str:
    return f"{base_url.rstrip('/')}{PATH}{signer.token(send_id, number, url)}?m={REF_PLACEHOLDER}"


def _text_urls(text: str) -> list[str]:
    return [_trim(m.group(0))[0] for m in _TEXT_URL.finditer(text) if "%%" not in m.group(0)]


def _text_replacement(found: str, redirect: dict[str, str]) -> str:
    url, rest = _trim(found)
    return redirect[url] + rest if url in redirect else found


def _trim(url: str) -> tuple[str, str]:
    """A URL as written in running text, without the punctuation after it."""
    end = len(url)
    while end and (url[end - 1] in _TRAILING or (url[end - 1] == ")" and url.count("(", 0, end) < url.count(")", 0, end))):
        end -= 1
    return url[:end], url[end:]


def _section_at(headings: list[tuple[int, str]], position: int) -> str:
    title = ""
    for start, heading in headings:
        if start > position:
            break
        title = heading
    return title


def _plain(fragment: str) -> str:
    return " ".join(html_lib.unescape(_TAG.sub("", fragment)).split())


# --- tokens -----------------------------------------------------------------------------


class BadClickToken(ValueError):
    """Altered, signed with a key we no longer hold, or not a token at all."""


def read_token(keys: tuple[str, ...], token: str) -> ClickToken:
    """What a token says, or ``BadClickToken``. Needs no database."""
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or token.count(".") != 3:
        raise BadClickToken("not a click token")
    send, number, encoded, signature = token.split(".")
    try:
        given = _unb64(signature)
        send_id, link = int(send, 36), int(number, 36)
        url = _unb64(encoded).decode("utf-8") if encoded else ""
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadClickToken("not a click token") from None
    signed = f"{send}.{number}.{encoded}".encode("ascii")
    if not any(hmac.compare_digest(key.mac(signed), given) for key in _signer(keys).keys):
        raise BadClickToken("bad signature")
    if send_id < 1 or link < 0 or (link == TRAP) != (url == "") or (url and not outside_url(url)):
        raise BadClickToken("not a click token")
    return ClickToken(send_id, link, url)


class _Key:
    def __init__(self, secret: str, purpose: bytes, size: int):
        self._keyed = hmac.new(hmac.new(secret.encode(), purpose, hashlib.sha256).digest(), digestmod=hashlib.sha256)
        self._size = size

    def mac(self, data: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(data)
        return mac.digest()[:self._size]


class _Signer:
    def __init__(self, keys: tuple[str, ...], purpose: bytes = b"newsletter.click", size: int = _SIGNATURE_BYTES):
        if not keys:
            raise ValueError("no signing keys configured")
        self.keys = [_Key(k, purpose, size) for k in keys]  # newest first: it signs

    def token(self, send_id: int, number: int, url: str) -> str:
        value = f"{_b36(send_id)}.{_b36(number)}.{_b64(url.encode('utf-8')) if url else ''}"
        return f"{value}.{_b64(self.keys[0].mac(value.encode('ascii')))}"


@lru_cache(maxsize=16)
def _signer(keys: tuple[str, ...]) -> _Signer:
    return _Signer(keys)


@lru_cache(maxsize=16)
def _ref_signer(keys: tuple[str, ...]) -> _Signer:
    return _Signer(keys, b"newsletter.click-person", _REF_SIGNATURE_BYTES)


def _b36(number: int) -> str:
    return _base36(number) if number else "0"


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the per-message part ---------------------------------------------------------------


@dataclass(frozen=True)
class ClickRef:
    """What the ``m=`` of a counted link says: never a person in aggregate mode."""

    nonce: str  # random, one per message: "distinct messages clicked"
    made_at: int | None  # the second the message was made (for "clicks seconds after delivery")
    subscriber_id: int | None = None  # per_person only, signed


class ClickRefs:
    """Makes each message's ``click_ref``: a random nonce and the second it was made;
    with ``per_person``, the subscriber's id too, signed (a few µs a message)."""

    def __init__(self, mode: str, keys: tuple[str, ...]):
        self.per_person = mode == CLICKS_PER_PERSON
        self._signer = _ref_signer(keys) if self.per_person else None
        self._second = -1
        self._stamp = ""
        self._random = b""  # os.urandom read 6 KiB at a time: one call per thousand messages, not one each
        self._used = 0
        self._lock = threading.Lock()

    def make(self, subscriber_id: int | None) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._stamp = second, _base36(second)
        with self._lock:
            if self._used >= len(self._random):
                self._random, self._used = os.urandom(6144), 0
            nonce = self._random[self._used:self._used + 6]
            self._used += 6
        ref = f"{base64.urlsafe_b64encode(nonce).decode('ascii')}.{self._stamp}"
        if self._signer is not None and subscriber_id:
            person = f"{ref}.{_b36(subscriber_id)}"
            ref = f"{person}.{_b64(self._signer.keys[0].mac(person.encode('ascii')))}"
        return ref


_NONCE = re.compile(r"[A-Za-z0-9_-]{8}")


def read_ref(keys: tuple[str, ...], ref: str) -> ClickRef | None:
    """The ``m=`` of a click, or None when it is missing or malformed (the click still counts)."""
    if not ref or len(ref) > MAX_REF_LENGTH or not ref.isascii():
        return None
    parts = ref.split(".")
    if not _NONCE.fullmatch(parts[0]) or len(parts) not in (2, 4):
        return None
    try:
        made_at = int(parts[1], 36)
    except ValueError:
        return None
    subscriber_id = None
    if len(parts) == 4:
        try:
            given = _unb64(parts[3])
            candidate = int(parts[2], 36)
        except (ValueError, binascii.Error):
            return ClickRef(parts[0], made_at)
        signed = ".".join(parts[:3]).encode("ascii")
        if any(hmac.compare_digest(k.mac(signed), given) for k in _ref_signer(keys).keys):
            subscriber_id = candidate
    return ClickRef(parts[0], made_at, subscriber_id)
