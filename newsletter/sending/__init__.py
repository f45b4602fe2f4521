"""Sending: an issue to every subscriber of a list, each once.

Takes in a stored issue (``IssueRow``) and a list, as a ``Send`` scheduled for
a time. Hands on the per-recipient ledger (``Delivery`` rows: sent, failed,
waiting for a retry), filled batch by batch by ``delivery.Deliverer``
through a ``transports.Transport``. Scheduling is data a beat tick polls
(``sends.tick``); the ledger, not the broker, decides who was sent.
"""
