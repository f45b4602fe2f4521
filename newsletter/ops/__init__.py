"""Operations: what the queues, the workers and every send are doing.

The terminal (``newsletter ops``), ``/metrics`` and the dashboard all read the
same snapshot (``status.collect_status``), so they always show the same numbers.
Nothing here imports Celery: workers write heartbeats to the database
(``heartbeats``) and queues are read straight from the broker (``broker``).
"""
