"""The chaos run: real processes, real load over HTTP, faults injected while it runs, then
invariants checked on the final state (``manage.py chaos``).

- ``cluster``: the run's processes (gunicorn, two Celery workers, beat) under a supervisor
  that restarts what dies, as systemd would;
- ``injector``: SIGKILLs, Redis wipes and PostgreSQL terminations while the load runs;
- ``load``: users, orders and payments over HTTP, concurrently, with the client's retries;
- ``invariants``: what must hold at the end, counted;
- ``report``: the table and the JSON.
"""
