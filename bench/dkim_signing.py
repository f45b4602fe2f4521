"""What a DKIM signature costs per message, by key type and canonicalisation.

    python bench/dkim_signing.py [--messages 300] [--key-bits 2048]

Builds real messages of the sample issue (``bench/render.py``'s template) and
signs them as a send does, from their parts (``Signer.sign_parts``: the body
every recipient shares canonicalised once, the rest per message, the
signature by OpenSSL through ``cryptography``), with an RSA key, an Ed25519
key and both at once, with relaxed/relaxed (what we sign with) and
relaxed/simple bodies; then the whole message the old way, dkimpy
canonicalising and hashing (``DkimSigner.signature_dkimpy``, OpenSSL's RSA)
and dkimpy alone (``sign_reference``, pure-Python RSA). Building the message
is included in every figure (and shown alone), as a send worker spends it.
Prints process CPU milliseconds per message, the best of three runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
from newsletter.sending.dkim import _PKCS1, _PREHASHED, DkimSigner, Signer  # noqa: E402
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


def template_and_people(count: int):
    with tempfile.TemporaryDirectory() as data_dir:
        settings = replace(Settings(), data_dir=Path(data_dir), secret_keys=("bench-key",))
        rendered = render_issue(load_issue(SAMPLE_ISSUE))
        template = template_for(rendered)
        return template, [recipient(settings, template, "https://example.org/2021-09/", n) for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parser.parse_args()
    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=args.key_bits))
    ed_pem = pem(ed25519.Ed25519PrivateKey.generate())

    def signer(*kinds: str, body: bytes = b"relaxed") -> Signer:
        keys = {"rsa": (rsa_pem, "bench"), "ed25519": (ed_pem, "bench-ed")}
        return Signer(tuple(DkimSigner(keys[k][0], keys[k][1], "example.org", canonicalize=(b"relaxed", body))
                            for k in kinds))

    template, people = template_and_people(args.messages)
    size = sum(len(template.build(p)) for p in people) / len(people)
    print(f"{len(people)} messages of {size / 1024:.0f} KiB, process CPU time a message (built and signed), "
          f"best of {RUNS}; {_load()}")
    build = best_cpu_of(RUNS, lambda: [template.build(p) for p in people]) / len(people) * 1000
    print(f"  {'built, not signed':52} {build:6.3f} ms")
    rows = [(f"RSA-{args.key_bits}, relaxed/relaxed (used)", signer("rsa")),
            ("Ed25519, relaxed/relaxed (used)", signer("ed25519")),
            ("RSA and Ed25519 at once, relaxed/relaxed (used)", signer("rsa", "ed25519")),
            (f"RSA-{args.key_bits}, relaxed/simple", signer("rsa", body=b"simple")),
            ("Ed25519, relaxed/simple", signer("ed25519", body=b"simple")),
            ("RSA and Ed25519 at once, relaxed/simple", signer("rsa", "ed25519", body=b"simple"))]
    for label, sign in rows:
        seconds = best_cpu_of(RUNS, lambda: [sign.sign_parts(template.parts(p)) for p in people])
        per_message = seconds / len(people) * 1000
        print(f"  {label:52} {per_message:6.3f} ms  (signing {per_message - build:6.3f} ms)")
    rsa_key, ed_key = signer("rsa").keys[0], signer("ed25519").keys[0]
    whole = [template.build(p) for p in people]
    _print_floor(whole, rsa_key.key, ed_key.key, args.key_bits)
    for label, sign in ((f"RSA-{args.key_bits}: dkimpy + OpenSSL, whole message (before)", rsa_key.signature_dkimpy),
                        ("Ed25519: dkimpy + PyNaCl, whole message (before)", ed_key.signature_dkimpy),
                        (f"RSA-{args.key_bits}: dkimpy alone (reference)", rsa_key.sign_reference)):
        items = whole[:max(10, len(whole) // 10)] if "alone" in label else whole
        seconds = best_cpu_of(RUNS, lambda: [sign(m) for m in items])
        print(f"  {label:52} {seconds / len(items) * 1000:6.3f} ms  (signing only)")


def _print_floor(messages: list[bytes], rsa_key, ed_key, bits: int) -> None:
    """The cryptography alone, on this machine now: what no signer can go below.

    Machines (and one machine from day to day) differ by half as much again in
    these; the figures above are best read against them.
    """
    digest = hashlib.sha256(b"header fields").digest()
    body = best_cpu_of(RUNS, lambda: [hashlib.sha256(m).digest() for m in messages]) / len(messages) * 1000
    ed = best_cpu_of(RUNS, lambda: [ed_key.sign(digest) for _ in messages]) / len(messages) * 1000
    few = messages[:max(10, len(messages) // 10)]
    rsa_ms = best_cpu_of(RUNS, lambda: [rsa_key.sign(digest, _PKCS1, _PREHASHED) for _ in few]) / len(few) * 1000
    print(f"  the cryptography alone, on this machine now: SHA-256 of a message {body:.3f} ms, "
          f"an Ed25519 signature {ed:.3f} ms, an RSA-{bits} signature {rsa_ms:.3f} ms")
    print(f"  {'so at least: Ed25519':52} {body + ed:6.3f} ms  (signing)")
    print(f"  {f'so at least: RSA-{bits}':52} {body + rsa_ms:6.3f} ms  (signing)")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


if __name__ == "__main__":
    main()
