"""What an SMTP server's reply means for a message: sent (and its queue id),
refused for good or for now, a throttle, or uncertain (the line broke after
the message went out).

A 421, or a 450/451/452 whose enhanced code is 4.7.x or whose text speaks of
a rate or of "too many" (not "too many recipients"), is a throttle: the
server wants this account to slow down.
"""

from __future__ import annotations

import re

from newsletter.transports.base import PERMANENT, TEMPORARY, Envelope, Result

# Where common servers put their queue id in the final 250 reply.
_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as ([\w.@-]+)", re.IGNORECASE),  # Postfix and many more
    re.compile(r"\bid=([\w.-]+)", re.IGNORECASE),  # Exim
    re.compile(r"^(?:\d\.\d{1,3}\.\d{1,3}\s+)?([\w.-]+) Message accepted", re.IGNORECASE),  # Sendmail
    re.compile(r"^(?:\d\.\d{1,3}\.\d{1,3}\s+)?OK\s+\d+\s+([\w.-]+) - gsmtp"),  # Gmail
    re.compile(r"^Ok\s+([\w-]{20,})$"),  # Amazon SES
)
_ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_RATE_WORDS = re.compile(r"\brate\b|rate.?limit|too many|too fast|slow down", re.IGNORECASE)


def is_throttle(code: int, reply: bytes | str) -> bool:
    """Whether a reply asks this sender to slow down (rather than refuse a message)."""
    if code == 421:
        return True
    if code not in (450, 451, 452):
        return False
    text = reply if isinstance(reply, str) else _decode(reply)
    if _too_many_recipients(code, text.encode()):
        return False
    return _enhanced_code(code, text).startswith("4.7.") or bool(_RATE_WORDS.search(text))


def _too_many_recipients(code: int, text: bytes) -> bool:
    return code == 452 and (b"4.5.3" in text or b"too many recipients" in text.lower())


def _refused(envelope: Envelope, code: int, reply: bytes, blame_recipient: bool = True) -> Result:
    text = _decode(reply)
    enhanced = _enhanced_code(code, text)
    error = reply_text(code, reply)
    throttled = is_throttle(code, text)
    if not blame_recipient and not throttled:
        # A refused sender is our configuration, not the subscriber's address.
        return Result(envelope.delivery_id, TEMPORARY, code=code, enhanced_code=enhanced,
                      error=f"the server refused the sender {envelope.sender}: {error}")
    status = PERMANENT if 500 <= code < 600 else TEMPORARY
    return Result(envelope.delivery_id, status, code=code, enhanced_code=enhanced, error=error, throttled=throttled)


def _uncertain(envelope: Envelope, cause: Exception) -> Result:
    return Result(envelope.delivery_id, TEMPORARY, uncertain=True,
                  error=f"the connection broke after the message was sent, before the server answered; "
                        f"it may have been delivered ({cause})")


def _broke(envelope: Envelope, cause: Exception) -> Result:
    return Result(envelope.delivery_id, TEMPORARY, error=f"the connection broke: {cause}")


def _closing_result(envelope: Envelope) -> Result:
    return Result(envelope.delivery_id, TEMPORARY, code=421, throttled=True,
                  error="the server closed the session before this message (421), twice")


def _queue_id(reply: bytes) -> str:
    text = _decode(reply).strip()
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return ""


def _enhanced_code(code: int, text: str) -> str:
    match = _ENHANCED_CODE.match(text)
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    return ""


def reply_text(code: int, reply: bytes | str) -> str:
    text = reply if isinstance(reply, str) else _decode(reply)
    return f"{code} {' '.join(text.split())}"


def _decode(reply: bytes) -> str:
    return reply.decode("utf-8", errors="replace")
