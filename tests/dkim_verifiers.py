"""Three DKIM verifiers that share no code with our signer, for the tests.

dkimpy (Python), OpenDKIM (C: ``opendkim -t`` in test mode, Debian's
``opendkim``) and Mail::DKIM (Perl, Debian's ``libmail-dkim-perl``; it has no
Ed25519 in Debian 12, so it checks the RSA signatures only). Each takes the
public keys from a dict ``{"selector._domainkey.domain": "v=DKIM1; ..."}``,
never from DNS. scripts/install-test-services installs the two packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import dkim as dkimpy

OPENDKIM = "/usr/sbin/opendkim"
MAIL_DKIM_SCRIPT = Path(__file__).with_name("mail_dkim_verify.pl")


def missing() -> str | None:
    """Why the other two verifiers cannot run here, or None."""
    if not shutil.which(OPENDKIM):
        return "OpenDKIM is not installed; scripts/install-test-services installs it (opendkim)"
    if subprocess.run(["perl", "-MMail::DKIM::Verifier", "-e", "1"], capture_output=True).returncode:
        return "Mail::DKIM is not installed; scripts/install-test-services installs it (libmail-dkim-perl)"
    return None


def as_delivered(message: bytes) -> bytes:
    """The message as SMTP delivers it: ending in a line break. A last line
    without one is dropped by OpenDKIM's test mode and read differently by
    Mail::DKIM; both canonicalisations add the line break, so the signature holds."""
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def dkimpy_results(message: bytes, records: dict[str, str]) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature, in order."""
    def lookup(name, timeout=5):
        record = records.get(name.decode().rstrip("."))
        return record.encode() if record else None

    count = len(re.findall(rb"^DKIM-Signature:", message.split(b"\r\n\r\n")[0], re.M | re.I))
    verifier = dkimpy.DKIM(message)

    def verified(index: int) -> bool:
        try:
            return bool(verifier.verify(idx=index, dnsfunc=lookup))
        except dkimpy.DKIMException:  # a body hash mismatch, say
            return False

    return [verified(i) for i in range(count)]


def opendkim_results(message: bytes, records: dict[str, str]) -> list[str]:
    """OpenDKIM's result for each signature (``pass``, ``fail``, ...), in the
    order of its Authentication-Results, which is the message's."""
    with tempfile.TemporaryDirectory(prefix="opendkim-") as folder:
        keys, config, eml = Path(folder, "keys"), Path(folder, "opendkim.conf"), Path(folder, "message.eml")
        keys.write_text("".join(f"{name} {record}\n" for name, record in records.items()))
        config.write_text(f"Mode v\nTestPublicKeys {keys}\nSyslog no\nAlwaysAddARHeader yes\n")
        eml.write_bytes(as_delivered(message))
        run = subprocess.run([OPENDKIM, "-x", str(config), "-t", str(eml), "-vvv"],
                             capture_output=True, text=True, timeout=60)
    header = re.search(r"hname='Authentication-Results' hvalue='(.*?)'", run.stdout + run.stderr, re.S)
    assert header, f"opendkim said nothing of the message: {run.stdout}{run.stderr}"
    return re.findall(r"\bdkim=(\w+)", header.group(1))


def mail_dkim_results(message: bytes, records: dict[str, str]) -> list[tuple[str, str]]:
    """Mail::DKIM's (algorithm, result) for each signature, in order."""
    run = subprocess.run(["perl", str(MAIL_DKIM_SCRIPT), *(f"{n}={r}" for n, r in records.items())],
                         input=as_delivered(message), capture_output=True, timeout=60, check=True)
    return [tuple(line.split()[:2]) for line in run.stdout.decode().splitlines()]


def assert_verified_everywhere(message: bytes, records: dict[str, str], signatures: int) -> None:
    """Every one of ``signatures`` signatures passes dkimpy and OpenDKIM, and
    each RSA one Mail::DKIM too."""
    assert dkimpy_results(message, records) == [True] * signatures
    assert opendkim_results(message, records) == ["pass"] * signatures
    rsa = [result for algorithm, result in mail_dkim_results(message, records) if algorithm.startswith("rsa")]
    assert rsa == ["pass"] * len(rsa)
    assert len(rsa) == message.split(b"\r\n\r\n")[0].count(b"a=rsa-sha256")
