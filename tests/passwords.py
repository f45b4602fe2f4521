"""Password hashes for tests whose subject is not the hash.

Production hashes with scrypt at werkzeug's default cost (n = 32,768: about
0.1 s a hash, and the same again at every log-in, which is the point). The
stored hash names its own cost, and logging in checks it with the same code
whatever the cost: accounts made with ``quick_hashes()`` carry a scrypt hash
of n = 1,024, so a test's log-in takes a millisecond and still checks the
password for real. tests/accounts/test_admins.py holds production's cost to
what it is.
"""

from __future__ import annotations

import functools
from unittest.mock import patch

from werkzeug.security import generate_password_hash

from newsletter.accounts import admins

QUICK_METHOD = "scrypt:1024:8:1"


@functools.cache
def quick_hash(password: str) -> str:
    return generate_password_hash(password, method=QUICK_METHOD)


def quick_hashes():
    """While in effect, accounts made or given a password get a quick hash."""
    return patch.object(admins, "_hash", quick_hash)
