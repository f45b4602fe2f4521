"""SMTP: the transport (``transport.py``: sessions, TLS, AUTH, connections
sharing one queue of work), its transactions pipelined with DATA or one
command at a time (``pipelining.py``), or streamed with BDAT (``chunking.py``)."""

from newsletter.transports.smtp.transport import SmtpTransport

__all__ = ["SmtpTransport"]
