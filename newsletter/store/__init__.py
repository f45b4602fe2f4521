"""The store: the database, and the rows of what authoring made.

Takes in a publication (``issue.Publication``) and a rendered issue
(``render.RenderedIssue``). Hands on SQLAlchemy rows (``models``: the
``IssueRow`` every send is made from, subscribers, sends and the per-recipient
``Delivery`` ledger), sessions (``db.session_scope``) and the Alembic
migrations that shape them. SQLite by default, PostgreSQL at scale.
"""
