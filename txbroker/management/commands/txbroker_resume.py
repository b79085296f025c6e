from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from txbroker import operations
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.management.base import ProgressBar, cli_actor, counted, resolve_msg_id


class Command(BaseCommand):
    help = "Resume checking of DISCARDED messages: `txbroker_resume MSG_ID` or `txbroker_resume --all`."

    def add_arguments(self, parser):
        parser.add_argument(
            "msg_id", nargs="?", help="the DISCARDED message to resume (its id, or a unique start of it)"
        )
        parser.add_argument("--all", action="store_true", help="every DISCARDED message")
        parser.add_argument("--dry-run", action="store_true", help="with --all: count, change nothing")

    def handle(self, *args, msg_id=None, dry_run=False, **options):
        resume_all = options["all"]
        if bool(msg_id) == resume_all:
            raise CommandError("give either a MSG_ID or --all")
        if resume_all:
            if dry_run:
                n = operations.resume_all(dry_run=True)
                self.stdout.write(f"dry run: would resume {counted(n, 'DISCARDED message')}; nothing changed")
                return
            bar = ProgressBar(self, "resumed")
            n = operations.resume_all(actor=cli_actor(), progress=bar)
            bar.finish()
            self.stdout.write(self.style.SUCCESS(f"resumed checking of {counted(n, 'message')}"))
            return
        if dry_run:
            raise CommandError("--dry-run goes with --all")
        msg_id = resolve_msg_id(msg_id)
        try:
            operations.resume(msg_id, actor=cli_actor())
        except (MessageNotFound, InvalidTransition) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"resumed checking of message {msg_id}: it is HALF again"))
