"""Loaded by pytest with ``-p config.pytest_env`` (pyproject.toml), before pytest-django
reads the settings (``config.settings.test``): where the suite's services are (PostgreSQL and
Redis on this machine), its secret, and its test-only apps. Child processes the tests start
inherit them. Anything already in the environment wins."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/txbroker")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-a-secret")
os.environ.setdefault("DJANGO_EXTRA_APPS", "txbroker.tests.support,harness")
# A second database, for the test that keeps txbroker's tables on their own alias.
os.environ.setdefault("TXBROKER_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/txbroker_alias")


def pytest_sessionstart(session) -> None:
    """The var folder's static files folder, as manage.py and the WSGI app make it."""
    from config.embedded import prepare

    prepare()
