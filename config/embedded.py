"""The embedded defaults keep their files in ``DJANGO_VAR_DIR`` (the SQLite file, the
filesystem queue, collected static files): the folder is made when a process starts (``manage.py``, the WSGI app,
a Celery worker or beat), never when the settings are imported."""

from __future__ import annotations

from pathlib import Path


def prepare() -> None:
    """Make the folder of every SQLite database that lives in a file, and the static files'
    folder (WhiteNoise warns on every request handler without it)."""
    from django.conf import settings

    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    for database in settings.DATABASES.values():
        name = str(database.get("NAME") or "")
        if database.get("ENGINE", "").endswith("sqlite3") and name and name != ":memory:":
            Path(name).parent.mkdir(parents=True, exist_ok=True)
