"""The chaos run: real processes, real load over HTTP, faults injected while it runs, then
invariants checked on the final state (``manage.py chaos``).

- ``faults``: the fault kinds (``--faults``) and how often each fires;
- ``cluster``: the run's processes (gunicorn, two Celery workers, beat) under a supervisor
  that restarts what dies, as systemd would; some with a skewed clock;
- ``injector``: SIGKILLs, Redis wipes, PostgreSQL terminations and crashes, frozen
  processes, while the load runs;
- ``load``: users, orders and payments over HTTP, concurrently, with the client's retries;
- ``history``: which process died or froze when (the harness's own record and the logs);
- ``invariants``: what must hold at the end, counted (false rollbacks included);
- ``report``: the table and the JSON.
"""
