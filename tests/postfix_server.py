"""A throwaway Postfix smtpd on a loopback port, in front of smtp-sink.

Postfix's own SMTP server, as production mail servers run it: it announces
PIPELINING (and CHUNKING, since Postfix 3.4), checks each recipient against
``reject`` and passes every accepted transaction on, before it answers, to an
smtp-sink (``smtpd_proxy_filter``) that writes each message to a file
(tests/smtp_sink.py). Nothing is queued or delivered anywhere.

It runs its own master process from a configuration folder of its own; the
package's system-wide Postfix is never used. Starting a master needs root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"

MASTER_CF = """\
{listen} inet  n - n - - smtpd
proxymap  unix  - - n - - proxymap
anvil     unix  - - n - 1 anvil
rewrite   unix  - - n - - trivial-rewrite
postlog   unix-dgram n - n - 1 postlogd
"""


def usable() -> str | None:
    """Why no instance can be started here, or None."""
    if not os.access(POSTFIX, os.X_OK):
        return "Postfix is not installed; scripts/install-test-services installs it"
    if os.geteuid() != 0:
        return "starting a Postfix master needs root"
    return None


class PostfixServer:
    def __init__(self, proxy_port: int, reject: tuple[str, ...] = ()):
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="postfix-"))
        self.folder.chmod(0o755)  # the postfix user reads its configuration here
        self.proxy_port = proxy_port
        self.reject = reject

    def start(self) -> PostfixServer:
        (self.folder / "queue").mkdir()
        data = self.folder / "data"
        data.mkdir()
        shutil.chown(data, "postfix")
        (self.folder / "master.cf").write_text(MASTER_CF.format(listen=f"{self.host}:{self.port}"))
        (self.folder / "main.cf").write_text(self._main_cf())
        self._postfix("start")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    log = self.log_text()
                    self.stop()
                    raise RuntimeError(f"Postfix did not start listening:\n{log}")
                time.sleep(0.1)

    def stop(self) -> None:
        if (self.folder / "data" / "master.lock").exists():
            self._postfix("stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostfixServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        path = self.folder / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def _postfix(self, command: str, check: bool = True) -> None:
        done = subprocess.run([POSTFIX, "-c", str(self.folder), command], capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"postfix {command} failed: {done.stdout}{done.stderr}\n{self.log_text()}")

    def _main_cf(self) -> str:
        refused = ", ".join(f"{{{address} = 550 5.1.1 <{address}>: Recipient address rejected: User unknown}}"
                            for address in self.reject)
        restrictions = f"check_recipient_access inline:{{{refused}}}, " if refused else ""
        return f"""\
compatibility_level = 3.6
queue_directory = {self.folder}/queue
data_directory = {self.folder}/data
mail_owner = postfix
myhostname = postfix.example.net
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = {restrictions}permit_mynetworks, reject
smtpd_proxy_filter = 127.0.0.1:{self.proxy_port}
maillog_file = {self.folder}/maillog
maillog_file_prefixes = {self.folder}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
