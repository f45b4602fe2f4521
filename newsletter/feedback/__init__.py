"""Feedback: what comes back after a send.

Takes in what providers and mailboxes report (webhooks, DSNs and complaint
reports in the bounce mailbox). Hands on ``events.Event`` values recorded
once each against their ``Delivery`` row, suppressions for hard bounces and
complaints, and the overview rows people are shown about sends (``reports``).
"""
