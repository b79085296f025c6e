"""``python -m harness.bench.createdb postgres://.../txbroker_bench``: create the bench's
PostgreSQL database when it does not exist yet (``make bench`` runs it before migrating)."""

from __future__ import annotations

import sys

import environ
import psycopg2
from psycopg2 import sql


def create_database(url: str) -> bool:
    """Create the database named in ``url``; False when it already exists."""
    params = environ.Env.db_url_config(url)
    connection = psycopg2.connect(
        dbname="postgres",
        user=params.get("USER") or "postgres",
        password=params.get("PASSWORD") or None,
        host=params.get("HOST") or "127.0.0.1",
        port=params.get("PORT") or 5432,
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [params["NAME"]])
            if cursor.fetchone():
                return False
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(params["NAME"])))
            return True
    finally:
        connection.close()


if __name__ == "__main__":
    created = create_database(sys.argv[1])
    print("created" if created else "exists", sys.argv[1].rsplit("/", 1)[-1])
