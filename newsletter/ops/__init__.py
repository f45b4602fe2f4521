"""Operations: what the queues, the workers and every send are doing.

Takes in the database (sends, the ledger, heartbeats, queue samples) and the
broker. Hands on one ``status.Status`` snapshot, problems worth a person's
attention (``problems.OpsProblem``) and Prometheus metrics. The accounts
that may log in to the dashboard are ``newsletter.accounts``.

The terminal (``newsletter ops``), ``/metrics`` and the dashboard all read the
same snapshot (``status.collect_status``), so they always show the same numbers.
Nothing here imports Celery: workers write heartbeats to the database
(``heartbeats``) and queues are read straight from the broker (``broker``).
"""
