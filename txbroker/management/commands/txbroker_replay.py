from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from txbroker import operations
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.management.base import ProgressBar, cli_actor, counted, parse_iso, resolve_msg_id


class Command(BaseCommand):
    help = (
        "Deliver a committed message again (`txbroker_replay MSG_ID [--group G] [--force]`), or replay "
        "dead letters in bulk (`txbroker_replay --dead [--group G] [--since ISO] [--dry-run]`)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "msg_id", nargs="?", help="the message to replay (its id, or a unique start of it)"
        )
        parser.add_argument("--group", help="only this consumer group")
        parser.add_argument("--force", action="store_true", help="also replay SUCCEEDED deliveries")
        parser.add_argument("--dead", action="store_true", help="replay dead letters in bulk")
        parser.add_argument("--since", help="with --dead: only those dead since this ISO date-time")
        parser.add_argument("--dry-run", action="store_true", help="with --dead: count, change nothing")

    def handle(
        self, *args, msg_id=None, group=None, force=False, dead=False, since=None, dry_run=False, **options
    ):
        if dead:
            if msg_id:
                raise CommandError("give either MSG_ID or --dead, not both")
            if force:
                raise CommandError("--force applies to one message, not to --dead")
            self.replay_dead(group=group, since=since, dry_run=dry_run)
            return
        if not msg_id:
            raise CommandError("give a MSG_ID, or --dead for the dead letters")
        if since or dry_run:
            raise CommandError("--since and --dry-run go with --dead")
        msg_id = resolve_msg_id(msg_id)
        try:
            replayed = operations.replay(msg_id, group=group, force=force, actor=cli_actor())
        except (MessageNotFound, InvalidTransition) as exc:
            raise CommandError(str(exc)) from exc
        if replayed:
            self.stdout.write(
                self.style.SUCCESS(
                    f"replayed {counted(replayed, 'delivery', 'deliveries')} of message {msg_id}"
                )
            )
        else:
            hint = "" if force else " (SUCCEEDED ones need --force)"
            self.stdout.write(self.style.WARNING(f"message {msg_id}: nothing to replay{hint}"))

    def replay_dead(self, *, group, since, dry_run) -> None:
        since_at = parse_iso(since, "--since") if since else None
        scope = f" of {group}" if group else ""
        if dry_run:
            n = operations.replay_dead(group=group, since=since_at, dry_run=True)
            self.stdout.write(f"dry run: would replay {counted(n, 'dead letter')}{scope}; nothing changed")
            return
        bar = ProgressBar(self, "replayed")
        n = operations.replay_dead(group=group, since=since_at, actor=cli_actor(), progress=bar)
        bar.finish()
        self.stdout.write(self.style.SUCCESS(f"replayed {counted(n, 'dead letter')}{scope}"))
