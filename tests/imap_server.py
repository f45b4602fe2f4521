"""A real IMAP server for tests: Debian's Dovecot, run in the foreground.

Each server gets a throwaway configuration, a passwd-file user and a Maildir
store, all under a folder the test owns; nothing of the system's own Dovecot
(its configuration, service or mail) is read or touched. It listens on two
free loopback ports: IMAP with STARTTLS and IMAPS, both with a certificate
from a ``trustme.CA``::

    with DovecotServer(tmp_path) as imap:
        imap.deliver(raw_message)
        url = imap.url()            # imaps://bounces:...@127.0.0.1:PORT/INBOX

``installed()`` says whether the binaries are there (``scripts/install-test-services``
installs them).
"""

from __future__ import annotations

import getpass
import imaplib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "bounce-reader-password"


def installed() -> bool:
    return os.access(DOVECOT, os.X_OK)


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DovecotServer:
    def __init__(self, folder: Path, ca: trustme.CA | None = None):
        self.folder = folder / "dovecot"
        self.ca = ca or trustme.CA()
        self.imap_port, self.imaps_port = free_loopback_port(), free_loopback_port()
        # Unix socket paths are limited to ~100 bytes, too short for pytest's
        # tmp_path; the sockets get a short folder of their own.
        self.run_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self.mail_uid, self.mail_gid, self.mail_root = self._mail_owner()
        self.process: subprocess.Popen | None = None

    @property
    def maildir(self) -> Path:
        return self.mail_root / USER

    def _mail_owner(self) -> tuple[int, int, Path]:
        """Who reads and writes the mail, and where it is kept."""
        if os.getuid() != 0:
            return os.getuid(), os.getgid(), self.folder / "mail"
        # Dovecot never touches mail as root, and pytest's tmp_path is private
        # to root: as root the store is a private folder of the package's
        # unprivileged "dovecot" account, removed at stop().
        account = pwd.getpwnam("dovecot")
        root = Path(tempfile.mkdtemp(prefix="dovecot-mail-"))
        os.chown(root, account.pw_uid, account.pw_gid)
        return account.pw_uid, account.pw_gid, root

    def url(self, scheme: str = "imaps", folder: str = "INBOX", password: str = PASSWORD) -> str:
        port = self.imaps_port if scheme == "imaps" else self.imap_port
        return f"{scheme}://{USER}:{password}@127.0.0.1:{port}/{folder}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's test CA (and nothing else)."""
        context = ssl.create_default_context(cadata=self.ca.cert_pem.bytes().decode())
        return context

    # -- running ---------------------------------------------------------------
    def start(self) -> DovecotServer:
        config = self._write_config()
        self.log = open(self.folder / "dovecot.log", "wb")
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_until_listening()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # dovecot's master stops its children on SIGTERM
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.mail_root != self.folder / "mail":
            shutil.rmtree(self.mail_root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited ({self.process.returncode}):\n{self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.imaps_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not listen within 15 s:\n{self.log_text()}")

    def log_text(self) -> str:
        return (self.folder / "dovecot.log").read_text(errors="replace")

    # -- the mailbox ------------------------------------------------------------
    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        """Put a message into a folder, unread, the way an MTA's delivery would."""
        with self.client() as imap:
            imap.append(folder, "", imaplib.Time2Internaldate(time.time()), raw)

    def client(self) -> imaplib.IMAP4_SSL:
        """A logged-in IMAPS client (close it with ``with``)."""
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=self.client_ssl_context())
        imap.login(USER, PASSWORD)
        return imap

    def flags(self, folder: str = "INBOX") -> list[str]:
        """The flags of every message in a folder, in order."""
        with self.client() as imap:
            imap.select(folder, readonly=True)
            _, data = imap.fetch("1:*", "(FLAGS)")
        return [item.decode() for item in data if item]

    # -- configuration ------------------------------------------------------------
    def _write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.cert_chain_pems[0].write_to_path(str(self.folder / "cert.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(self.folder / "cert.pem"), append=True)
        cert.private_key_pem.write_to_path(str(self.folder / "key.pem"))
        (self.folder / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        config = self.folder / "dovecot.conf"
        config.write_text(self._config_text())
        return config

    def _config_text(self) -> str:
        # Auth runs as the user running the tests, so it can read the users
        # file in tmp_path. Dovecot refuses to run its login processes as
        # root: as root they run as the package's unprivileged dovenull (they
        # only speak to the network and to sockets in run_dir).
        user = getpass.getuser()
        login_user = "dovenull" if os.getuid() == 0 else user
        folder = self.folder
        return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.run_dir}
state_dir = {self.run_dir}/state
instance_name = test-{self.imaps_port}
log_path = {folder}/dovecot.log
default_login_user = {login_user}
default_internal_user = {user}
mail_location = maildir:{self.mail_root}/%u
mail_uid = {self.mail_uid}
mail_gid = {self.mail_gid}
# Debian's default (500) would refuse the "dovecot" system account.
first_valid_uid = {self.mail_uid}
first_valid_gid = {self.mail_gid}
ssl = yes
ssl_cert = <{folder}/cert.pem
ssl_key = <{folder}/key.pem
# Plaintext passwords over TLS only; the reader never sends one in clear.
disable_plaintext_auth = yes
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {folder}/users
}}
userdb {{
  driver = static
  args = home={self.mail_root}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
"""
