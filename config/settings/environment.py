"""The environment every settings module reads (django-environ), and the folders that
follow from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ

env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env.str("DJANGO_VAR_DIR", default=str(BASE_DIR / "var")))


def env_seconds(name: str, default: float) -> float:
    value = env.float(name, default=default)
    if value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return value


def env_with_defaults(defaults: dict[str, Any]) -> dict[str, Any]:
    """Each setting of an app's ``DEFAULTS`` (its one place), read from the environment
    variable of the same name; a float default is a number of seconds."""
    read = {bool: env.bool, int: env.int, str: env.str}
    return {
        name: env_seconds(name, default)
        if isinstance(default, float)
        else read[type(default)](name, default=default)
        for name, default in defaults.items()
    }
