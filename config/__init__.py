from . import serving  # noqa: F401 - registers the deploy check of the secret key
from .celery import app as celery_app

__all__ = ("celery_app",)
