"""The ASGI application (``config.asgi:application``): Django's, after
:func:`config.serving.prepare_to_serve`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()

from config.serving import prepare_to_serve  # noqa: E402 - needs the settings loaded

prepare_to_serve()
