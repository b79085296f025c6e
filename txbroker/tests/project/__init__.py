"""txbroker's own test project: the smallest Django project that installs txbroker (admin,
REST API, metrics, django-celery-beat) and the tests' support app, and nothing of the
application around it. ``make test-txbroker`` runs txbroker's tests on it; worker and beat
processes the tests start load the same settings and this package's Celery app."""

from .celery import app as celery_app

__all__ = ("celery_app",)
