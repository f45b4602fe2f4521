"""The audience: who gets an issue, and who must never get one.

Takes in people (added, imported from CSV, signed up with double opt-in) and
their requests (unsubscribe, erasure). Hands on the store's ``Subscriber`` and
``Membership`` rows of a list, the suppression rule every send applies
(``suppressions.suppressed_in_sql``), and the signed link tokens each message
carries (``tokens``).
"""
