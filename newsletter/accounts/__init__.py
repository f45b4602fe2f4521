"""Accounts: the people who log in to the comms console and the ops dashboard.

Who they are and what they may do (``admins``: accounts, roles per
publication, passwords, the login limit), the browsers they are logged in
from (``websessions``), the links that let them choose a password
(``invitations``), the short emails they are sent (``notices``), and what
they did (``audit``).

Takes in the store's rows and an address to check (``audience``); the
console, the ops dashboard and the command line use it, never the other way.
"""
