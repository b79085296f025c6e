"""The WSGI application (``config.wsgi:application``): Django's, after
:func:`config.serving.prepare_to_serve`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

from config.serving import prepare_to_serve  # noqa: E402 - needs the settings loaded

prepare_to_serve()
