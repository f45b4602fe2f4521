"""`newsletter dkim`: make a DKIM key and check its DNS record.

``keygen`` writes a private key (mode 0600, never over an existing file) and
prints the TXT record to publish; ``verify`` checks a published record, given
as text or a file since nothing here asks DNS, against a key.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from newsletter.cli import LazyConsole, err_console, main
from newsletter.config import read_secret
from newsletter.errors import CONTENT_ERRORS, InputError, Problem
from newsletter.sending import dkim_records
from newsletter.sending.dkim import ED25519, RSA, check_domain, check_selector, key_type, private_key_from_pem

console = LazyConsole()

EXIT_CODES = ("Exit codes: 0 done (verify: the record matches the key); 1 (verify) the record does not match, "
              "and what differs is printed; 2 a bad option, or a key file that cannot be used.")


def _selector_and_domain(selector: str, domain: str) -> tuple[str, str]:
    return check_selector(selector, "--selector"), check_domain(domain, "--domain")


@main.group()
def dkim():
    """DKIM keys: make one and print its DNS record, check a published record."""


@dkim.command(epilog=EXIT_CODES)
@click.option("--selector", required=True, help="The selector the record is published under, e.g. news2026.")
@click.option("--domain", required=True, help="The signing (d=) domain, e.g. example.org.")
@click.option("--type", "kind", type=click.Choice([RSA, ED25519]), default=RSA, show_default=True,
              help="RSA is verified everywhere; Ed25519 (RFC 8463) is short, best signed beside an RSA key.")
@click.option("--bits", type=int, default=2048, show_default=True, help="RSA only: the key's size.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (PEM, mode 0600); an existing file is never overwritten.")
def keygen(selector: str, domain: str, kind: str, bits: int, out: Path):
    """Write a new private key and print its DNS record.

    The private key goes to --out; the TXT record to publish at
    SELECTOR._domainkey.DOMAIN is printed on standard output, as a zone-file line.
    """
    selector, domain = _selector_and_domain(selector, domain)
    if kind == ED25519 and bits != 2048:
        raise InputError(Problem("--bits", "Ed25519 keys have one size", "leave --bits out with --type ed25519"))
    key = dkim_records.generate_key(kind, bits)
    dkim_records.write_private_key(out, key)
    if kind == RSA and bits < 2048:
        err_console.print(f"[yellow]warning:[/] a {bits}-bit RSA key; 2048 bits are recommended", highlight=False)
    err_console.print(f"Private key written to {escape(str(out))} (readable by you only). Publish this TXT record, "
                      "then name the key in the publication's settings:", highlight=False, soft_wrap=True)
    click.echo(dkim_records.zone_line(selector, domain, key))  # never wrapped: it is copied into DNS


@dkim.command(epilog=EXIT_CODES)
@click.option("--selector", required=True, help="The selector the record is published under.")
@click.option("--domain", required=True, help="The signing (d=) domain.")
@click.option("--key", "key_file", required=True, metavar="FILE", help="The private key file (PEM).")
@click.option("--record", help='The published record, e.g. "v=DKIM1; k=rsa; p=..." (or a zone-file line).')
@click.option("--record-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file holding the published record (a zone-file line, or what a resolver answered).")
def verify(selector: str, domain: str, key_file: str, record: str | None, record_file: Path | None):
    """Check that a published DNS record matches a private key."""
    selector, domain = _selector_and_domain(selector, domain)
    if (record is None) == (record_file is None):
        raise InputError(Problem("options", "say what is published", "give either --record TEXT or --record-file FILE"))
    if record_file is not None:
        try:
            record = record_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(Problem(f"--record-file {record_file}", f"cannot be read ({getattr(exc, 'strerror', exc)})",
                                     "give a text file holding the record")) from None
    pem = read_secret(file=key_file, where="--key")
    key = private_key_from_pem(pem.encode("ascii", "replace") + b"\n", f"--key {key_file}")
    name = dkim_records.record_name(selector, domain)
    differences = dkim_records.record_differences(key, selector, domain, record)
    if not differences:
        kind = "Ed25519" if key_type(key) == ED25519 else f"RSA-{key.key_size}"
        console.print(f"matches: {name} publishes the public half of this {kind} key", highlight=False, soft_wrap=True)
        return
    for difference in differences:
        err_console.print(f"[red]{escape(name)}: does not match:[/] {escape(difference)}", highlight=False, soft_wrap=True)
    err_console.print("The record to publish for this key:", highlight=False)
    click.echo(dkim_records.zone_line(selector, domain, key), err=True)
    sys.exit(CONTENT_ERRORS)
