"""txbroker's database: its alias (TXBROKER_DATABASE) and the recovery of broken sessions."""

from __future__ import annotations

from django.db import connections

from txbroker.conf import txsettings


def broker_db() -> str:
    """The alias of the database that holds txbroker's tables."""
    return txsettings.DATABASE


def recover_connections() -> None:
    """Close the connections of this thread that broke (outside any transaction): the next
    query opens a new one, instead of failing on a session the server already ended."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
