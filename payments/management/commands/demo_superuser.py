"""``manage.py demo_superuser``: the demo superuser of ``make run``, for local use only.

It makes a superuser whose password was typed on a command line, so it refuses to run with
DEBUG off, and it only ever creates: an existing account (perhaps a real one, on whatever
database ``DATABASE_URL`` names) is never reset or promoted.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

DEBUG_REQUIRED = (
    "demo_superuser runs with DJANGO_DEBUG=1 only (`make run` sets it); "
    "in production use `manage.py createsuperuser`"
)
USER_EXISTS = (
    "a user named {username!r} exists already: demo_superuser only creates accounts, it never "
    "changes one (pass --exists-ok to leave it as it is and exit 0)"
)
BAD_CREDENTIALS = "the demo superuser needs a username and a password of 8+ characters"


class Command(BaseCommand):
    help = "Create the demo superuser of `make run` (DEBUG only; never changes an existing user)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", required=True)
        parser.add_argument(
            "--exists-ok",
            action="store_true",
            help="when the user exists, leave it unchanged and exit 0 (a second `make run`)",
        )

    def handle(self, *args, username: str, password: str, exists_ok: bool, **options):
        if not settings.DEBUG:
            raise CommandError(DEBUG_REQUIRED)
        if not username.strip() or len(password) < 8:
            raise CommandError(BAD_CREDENTIALS)
        users = get_user_model().objects
        if users.filter(username=username).exists():
            return self._exists(username, exists_ok)
        try:
            with transaction.atomic():
                users.create_superuser(username=username, email="", password=password)
        except IntegrityError:  # created meanwhile by someone else
            return self._exists(username, exists_ok)
        self.stdout.write(self.style.SUCCESS(f"demo superuser created: {username} / {password}"))

    def _exists(self, username: str, exists_ok: bool) -> None:
        if not exists_ok:
            raise CommandError(USER_EXISTS.format(username=username))
        self.stdout.write(self.style.WARNING(f"user {username} exists already: left unchanged"))
