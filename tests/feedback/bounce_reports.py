"""Reports as they reach the bounce mailbox about a real send: DSNs (RFC 3464)
and feedback reports (RFC 5965), for the Maildir and IMAP readers' tests."""

from __future__ import annotations

from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

from sqlalchemy import select

from newsletter.store.models import Suppression

BOUNCE_DOMAIN = "bounces.example.org"


def original_headers(message: bytes) -> Message:
    headers = Message()
    for line in message.split(b"\r\n\r\n", 1)[0].decode().split("\r\n"):
        if ":" in line and not line.startswith((" ", "\t")):
            name, value = line.split(":", 1)
            headers[name] = value.strip()
    return headers


def dsn(to: str, recipient: str, original: bytes, action: str = "failed", status: str = "5.1.1") -> bytes:
    """A delivery status notification as a receiving MTA writes one."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.net"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = formatdate()
    report["Message-ID"] = make_msgid(domain="mx.example.net")
    report.attach(MIMEText("I'm sorry to have to inform you that your message could not be delivered.\n"))
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; mx.example.net"
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = f"smtp; 550 {status} <{recipient}>: Recipient address rejected"
    status_part = MIMEBase("message", "delivery-status")
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    report.attach(MIMEMessage(original_headers(original)))
    return report.as_bytes()


def arf(original: bytes, recipient: str, mail_from: str) -> bytes:
    """A feedback report (ARF) as a mailbox provider's feedback loop sends one."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "fbl@mailbox.example.net"
    report["To"] = "fbl-reports@example.org"
    report["Subject"] = "Abuse report"
    report["Date"] = formatdate()
    report["Message-ID"] = make_msgid(domain="mailbox.example.net")
    report.attach(MIMEText("This is an email abuse report.\n"))
    fields = Message()
    fields["Feedback-Type"] = "abuse"
    fields["User-Agent"] = "ExampleFBL/1.0"
    fields["Version"] = "1"
    fields["Original-Mail-From"] = f"<{mail_from}>"
    fields["Original-Rcpt-To"] = f"<{recipient}>"
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload([fields])
    report.attach(feedback)
    headers = MIMEText(original.split(b"\r\n\r\n", 1)[0].decode(), "rfc822-headers")
    report.attach(headers)
    return report.as_bytes()


def suppressions(session) -> dict:
    return dict(session.execute(select(Suppression.email, Suppression.reason)).all())
