"""What a DKIM signature costs per message, two ways.

    python bench/dkim_signing.py [--messages 300] [--key-bits 2048]

Builds real messages of the sample issue (``bench/render.py``'s template),
then signs them with ``DkimSigner.sign`` (dkimpy canonicalises and hashes,
OpenSSL through ``cryptography`` makes the RSA signature) and with
``DkimSigner.sign_reference`` (dkimpy alone: pure-Python RSA). Prints
milliseconds per message for each, the best of three runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from newsletter.config import Settings  # noqa: E402
from newsletter.authoring.content import load_issue  # noqa: E402
from newsletter.sending.dkim import DkimSigner  # noqa: E402
from newsletter.authoring.render import render_issue  # noqa: E402
from bench.render import SAMPLE_ISSUE, best_of, recipient, template_for  # noqa: E402

RUNS = 3


def messages(count: int) -> list[bytes]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = replace(Settings(), data_dir=Path(data_dir), secret_keys=("bench-key",))
        rendered = render_issue(load_issue(SAMPLE_ISSUE))
        template = template_for(rendered)
        return [template.build(recipient(settings, template, "https://example.org/2021-09/", n)) for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=args.key_bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signer = DkimSigner(pem, "bench", "example.org")
    built = messages(args.messages)
    size = sum(map(len, built)) / len(built)
    print(f"{len(built)} messages of {size / 1024:.0f} KiB, RSA-{args.key_bits}, relaxed/relaxed, best of {RUNS}")
    for label, sign in (("dkimpy + cryptography (used)", signer.sign), ("dkimpy alone (reference)", signer.sign_reference)):
        seconds = best_of(RUNS, lambda: [sign(m) for m in built])
        per_message = seconds / len(built) * 1000
        print(f"  {label:30} {per_message:6.2f} ms per message  {1000 / per_message:7.0f} messages/s per core")


if __name__ == "__main__":
    main()
