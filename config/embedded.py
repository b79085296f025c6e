"""The embedded defaults keep their files in ``DJANGO_VAR_DIR`` (the SQLite file, the
filesystem queue): the folder is made when a process starts (``manage.py``, the WSGI app,
a Celery worker or beat), never when the settings are imported."""

from __future__ import annotations

from pathlib import Path


def prepare() -> None:
    """Make the folder of every SQLite database that lives in a file."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        name = str(database.get("NAME") or "")
        if database.get("ENGINE", "").endswith("sqlite3") and name and name != ":memory:":
            Path(name).parent.mkdir(parents=True, exist_ok=True)
