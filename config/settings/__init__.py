"""The settings of every process (web, worker, beat, commands): ``base``, plus the
production hardening (``production``) unless ``DJANGO_DEBUG`` is on. The test suite uses
``config.settings.test``."""

from config.settings.base import *  # noqa: F403
from config.settings.base import DEBUG

if not DEBUG:
    from config.settings.production import *  # noqa: F403
