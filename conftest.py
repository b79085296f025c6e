"""Shared fixtures. The suite runs on PostgreSQL and Redis (defaults in
``config/pytest_env.py``) and starts real Celery worker and beat processes against the test
database (``txbroker/tests/processes.py``)."""

pytest_plugins = ["txbroker.tests.processes"]
