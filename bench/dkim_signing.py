"""What a DKIM signature costs per message, by key type.

    python bench/dkim_signing.py [--messages 300] [--key-bits 2048]

Builds real messages of the sample issue (``bench/render.py``'s template),
then signs them with ``DkimSigner.sign`` (dkimpy canonicalises and hashes,
OpenSSL through ``cryptography`` makes the RSA signature), with
``DkimSigner.sign_reference`` (dkimpy alone: pure-Python RSA), with an
Ed25519 key (dkimpy and PyNaCl), and with an RSA and an Ed25519 key at once
(two signatures, as ``signer_for_keys`` does). Prints process CPU
milliseconds per message for each, the best of three runs, and the cost of
both signatures against RSA alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from newsletter.config import Settings  # noqa: E402
from newsletter.authoring.content import load_issue  # noqa: E402
from newsletter.sending.dkim import DkimSigner, Signer  # noqa: E402
from newsletter.authoring.render import render_issue  # noqa: E402
from bench.render import SAMPLE_ISSUE, recipient, template_for  # noqa: E402

RUNS = 3


def best_cpu_of(runs: int, work) -> float:
    """The least process CPU time of ``runs`` calls, in seconds: less swayed by a loaded machine than wall time."""
    times = []
    for _ in range(runs):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


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
    signer = DkimSigner(pem(rsa.generate_private_key(public_exponent=65537, key_size=args.key_bits)), "bench", "example.org")
    ed = DkimSigner(pem(ed25519.Ed25519PrivateKey.generate()), "bench-ed", "example.org")
    built = messages(args.messages)
    size = sum(map(len, built)) / len(built)
    print(f"{len(built)} messages of {size / 1024:.0f} KiB, relaxed/relaxed, process CPU time, best of {RUNS}")
    costs = {}
    for label, sign in ((f"RSA-{args.key_bits}: dkimpy + cryptography (used)", signer.sign),
                        (f"RSA-{args.key_bits}: dkimpy alone (reference)", signer.sign_reference),
                        ("Ed25519: dkimpy + PyNaCl (used)", ed.sign),
                        ("RSA and Ed25519 at once (used)", Signer((signer, ed)).sign)):
        seconds = best_cpu_of(RUNS, lambda: [sign(m) for m in built])
        costs[label] = per_message = seconds / len(built) * 1000
        print(f"  {label:44} {per_message:6.2f} ms per message  {1000 / per_message:7.0f} messages/s per core")
    values = list(costs.values())
    print(f"  both signatures cost {values[3] / values[0]:.2f} x RSA alone; Ed25519 alone {values[2] / values[0]:.2f} x")


if __name__ == "__main__":
    main()
