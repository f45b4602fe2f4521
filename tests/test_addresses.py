"""normalise_address takes a short cut for plain addresses: it must accept and
refuse exactly what email-validator does, and give the same stored form."""

import pytest
from email_validator import EmailNotValidError, validate_email

from newsletter.addresses import normalise_address

LONG_LABEL = "a" * 63
CORPUS = [
    # plain, and plain with every character a dot-atom allows
    "reader000001@example.com", "Jo.Bloggs@Example.ORG", "  spaced@example.org  ", "x@a.b.c.example.co.uk",
    "a+tag@example.org", "o'brien@example.ie", "!#$%&'*+-/=?^_`{|}~@example.org", "1@example.org",
    "under_score@sub-domain.example.org", "digits@123.example.org", "a@x-y.example.org",
    # role mailboxes email-validator lower-cases (RFC 2142)
    "Info@example.org", "POSTMASTER@example.org", "Abuse@Example.org", "info.desk@example.org",
    # dots and hyphens in the wrong places
    ".lead@example.org", "trail.@example.org", "two..dots@example.org", "a@.example.org", "a@example.org.",
    "a@example..org", "a@-example.org", "a@example-.org", "a@ex_ample.org",
    # domains that are not for the internet, or have no dot, or a numeric top level
    "a@localhost", "a@example", "a@host.local", "a@x.test", "a@x.invalid", "a@x.onion", "a@1.2.3.4", "a@example.123",
    "a@x.arpa",
    # lengths at and over the limits
    f"{'l' * 64}@example.org", f"{'l' * 65}@example.org", f"a@{LONG_LABEL}.example.org", f"a@{LONG_LABEL}a.example.org",
    f"{'l' * 64}@{'d' * 60}.{'d' * 60}.{'d' * 60}.org",  # 253 characters: within
    f"{'l' * 64}@{'d' * 61}.{'d' * 60}.{'d' * 60}.org",  # 254
    f"{'l' * 64}@{'d' * 62}.{'d' * 60}.{'d' * 60}.org",  # 255: too long
    f"a@{'.'.join([LONG_LABEL] * 4)}.org",  # a domain over 253 characters
    # IDNA, in both forms, and non-ASCII local parts
    "x@Bücher.example", "x@xn--bcher-kva.example", "x@XN--BCHER-KVA.example", "jörg@example.org", "用户@例子.广告",
    "x@xn--invalid-.example", "x@münchen.de", "Ñandú@Ñandú.example", "x@\u0130stanbul.example",
    # NFC: a decomposed local part
    "jo\u0308rg@example.org",
    # quoted local parts, display names, comments, literals
    '"quoted"@example.org', '"with space"@example.org', '"a\\"b"@example.org', '"unclosed@example.org',
    "Jo Bloggs <jo@example.org>", "<jo@example.org>", "jo@example.org (comment)", "(comment)jo@example.org",
    "jo@[192.0.2.1]", "jo@[IPv6:2001:db8::1]",
    # not addresses at all
    "", "@", "no-at-sign", "@example.org", "a@", "a@@example.org", "a@b@example.org", "a b@example.org",
    "a\t@example.org", "a,b@example.org", "a;b@example.org", "a\\b@example.org", "a\x00@example.org",
    "a@exam ple.org", "a@example.org\n", "é@example.org", "a@ex\u200bample.org",
]


def validator(raw: str) -> str | None:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def ours(raw: str) -> str | None:
    try:
        return normalise_address(raw)
    except EmailNotValidError:
        return None


@pytest.mark.parametrize("raw", CORPUS)
def test_the_short_cut_accepts_and_refuses_what_email_validator_does(raw):
    assert ours(raw) == validator(raw)


def test_the_corpus_holds_both_kinds():
    accepted = [raw for raw in CORPUS if validator(raw) is not None]
    assert len(accepted) > 20 and len(CORPUS) - len(accepted) > 30


def test_a_refused_address_gets_email_validators_reason():
    with pytest.raises(EmailNotValidError, match="two periods in a row"):
        normalise_address("two..dots@example.org")
    with pytest.raises(EmailNotValidError, match="special-use or reserved name"):
        normalise_address("a@x.test")


def test_the_same_domain_in_another_case_is_checked_alike():
    assert normalise_address("a@Example.ORG") == normalise_address("a@example.org") == "a@example.org"
    assert ours("a@X.TEST") is None


def test_many_made_up_addresses_get_the_same_answer():
    """Addresses put together at random from awkward pieces (a fixed seed: the same every run)."""
    import random

    pieces = ["a", "Z", "0", ".", "-", "_", "+", '"', " ", "é", "ü", "xn--", "..", "info", "example", "\\", ",",
              "ß", "\u0301", "<", "(", "[", "a" * 63]
    labels = ["a", "Z9", "ex-ample", "-x", "x-", "xn--bcher-kva", "bücher", "_", "", "a" * 63, "a" * 64, "ß"]
    tops = ["org", "COM", "test", "local", "123", "x", "example", "", "co.uk"]
    chance = random.Random(11)
    tried = set()
    while len(tried) < 3000:
        local = "".join(chance.choices(pieces, k=chance.randint(0, 3)))
        domain = ".".join([*chance.choices(labels, k=chance.randint(1, 3)), chance.choice(tops)])
        tried.add(f"{local}@{domain}" if chance.random() < 0.95 else local + domain)
    different = [raw for raw in sorted(tried) if ours(raw) != validator(raw)]
    assert different == []
    assert sum(validator(raw) is not None for raw in tried) > 100  # the corpus has accepted addresses too
