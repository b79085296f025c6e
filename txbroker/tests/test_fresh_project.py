"""The README's "Use txbroker in your own Django project", followed in a new project.

Builds the wheel, installs it with its extras into a new virtualenv (with psycopg 3, not
psycopg2, and redis), makes a project with ``django-admin startproject``, writes the files
the README's section shows (read from README.md itself: every block after a
``<!-- fresh-project: ... -->`` marker), migrates against a PostgreSQL database of its own,
and through a real Celery worker delivers one committed message and one settled by
check-back (``manage.py txbroker_check``, no beat). Then the optional URLs answer.
Everything it made is removed: the database, the worker, the Redis db's queue.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings
from django.db import connection

from txbroker.testing import Proc, wait_until
from txbroker.tests.processes import ROOT, broker_is_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECTION = "## Use txbroker in your own Django project"
MARKER = re.compile(r"<!-- fresh-project: (?P<what>[^>]+?) -->\n```(?:python|sh)\n(?P<code>.*?)```", re.S)


def readme_blocks() -> dict[str, str]:
    """{marker: code} of the README's section."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else None]
    blocks = {m["what"]: m["code"] for m in MARKER.finditer(section)}
    assert blocks, "no <!-- fresh-project: ... --> block in the README's section"
    return blocks


def commands(block: str) -> list[str]:
    """The command lines of a ``sh`` block, comments dropped."""
    lines = (line.split("  #")[0].split(" #")[0].strip() for line in block.splitlines())
    return [line for line in lines if line]


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def admin_connect(dbname: str):
    """A connection (autocommit) to ``dbname`` on the suite's PostgreSQL server, with the
    driver Django uses."""
    params = connection.settings_dict
    conn = connection.Database.connect(
        dbname=dbname,
        host=params.get("HOST") or "127.0.0.1",
        port=params.get("PORT") or 5432,
        user=params.get("USER") or "postgres",
        password=params.get("PASSWORD") or "",
        connect_timeout=10,
    )
    conn.autocommit = True
    return conn


def scalar(dbname: str, sql: str, params: tuple = ()):
    conn = admin_connect(dbname)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"txbroker_fresh_{os.getpid()}"
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    conn = admin_connect("postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute(drop)
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    yield name
    conn = admin_connect("postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute(drop)
    finally:
        conn.close()


@pytest.fixture
def queue() -> Iterator[str]:
    """The suite's Redis db, emptied before and after."""
    if not broker_is_redis():
        pytest.skip("the README's quick start runs on Redis")
    client = redis_lib.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield settings.CELERY_BROKER_URL
    client.flushdb()
    client.close()


def test_the_readme_quick_start_delivers_in_a_fresh_project(tmp_path, fresh_database, queue):
    blocks = readme_blocks()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "TXBROKER_", "CELERY_", "DATABASE", "PYTHON", "VIRTUAL_ENV"))
    }

    # The wheel, installed with its extras into a new virtualenv (no psycopg2 there).
    dist = tmp_path / "dist"
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist), str(ROOT)],
        cwd=ROOT,
        env=env,
    )
    (wheel,) = dist.glob("django_txbroker-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
    bin_dir = venv / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    install = commands(blocks["install"])
    assert install[0] == 'pip install "django-txbroker[api,beat,metrics]"'
    run(
        [str(bin_dir / "pip"), "install", "-q", f"{wheel}[api,beat,metrics]"],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    for line in install[1:]:
        argv = shlex.split(line)
        assert argv[0] == "pip"
        run([str(bin_dir / "pip"), *argv[1:3], "-q", *argv[3:]], cwd=tmp_path, env=env, timeout=900)
    drivers = run(
        [
            str(bin_dir / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('psycopg2') is None, bool(u.find_spec('psycopg')))",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert drivers.split() == ["True", "True"]  # psycopg 3 only

    # startproject, startapp, then the README's files.
    project = tmp_path / "project"
    project.mkdir()
    run([str(bin_dir / "django-admin"), "startproject", "myproject", str(project)], cwd=tmp_path, env=env)
    python = str(bin_dir / "python")
    run([python, "manage.py", "startapp", "shop"], cwd=project, env=env)
    for what, code in blocks.items():
        action, _, path = what.partition(" ")
        if action not in {"write", "append"}:
            continue
        target = project / path
        if action == "write":
            target.write_text(code)
        else:
            target.write_text(target.read_text() + "\n" + code)
    # The test's own: its database and Redis db, short broker intervals, the test client's host.
    params = connection.settings_dict
    with open(project / "myproject" / "settings.py", "a") as own:
        own.write(
            "\n# --- test_fresh_project's own ---\n"
            "DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', "
            f"'NAME': {fresh_database!r}, 'HOST': {params.get('HOST') or '127.0.0.1'!r}, "
            f"'PORT': {str(params.get('PORT') or 5432)!r}, 'USER': {params.get('USER') or 'postgres'!r}, "
            f"'PASSWORD': {params.get('PASSWORD') or ''!r}}}}}\n"
            f"CELERY_BROKER_URL = {queue!r}\n"
            "TXBROKER_TRANSACTION_TIMEOUT = '1s'\n"
            "TXBROKER_CHECK_INTERVAL = '1s'\n"
            "ALLOWED_HOSTS = ['localhost']\n"
        )

    manage = [python, "manage.py"]
    run([*manage, "makemigrations", "shop"], cwd=project, env=env)
    readme_commands = commands(blocks["commands"]) + commands(blocks["commands without beat"])
    assert "python manage.py migrate" in readme_commands
    run([*manage, "migrate", "--no-input"], cwd=project, env=env)
    periodic = scalar(
        fresh_database, "SELECT count(*) FROM django_celery_beat_periodictask WHERE task LIKE 'txbroker.%%'"
    )
    assert periodic == 2  # migrate made the check-back and sweep tasks

    worker_line = "celery -A myproject worker --loglevel=INFO"
    assert worker_line in readme_commands
    worker = Proc(
        "worker",
        [
            str(bin_dir / "celery"),
            *shlex.split(worker_line)[1:],
            "--concurrency=1",
            "--without-mingle",
            "--without-gossip",
            f"--hostname=fresh-{os.getpid()}@%h",
        ],
        env,
        tmp_path,
        cwd=project,
    )
    try:
        wait_until(
            lambda: "ready." in worker.log() or not worker.alive(), timeout=90, what="the worker ready"
        )
        assert worker.alive(), worker.log()[-3000:]

        def shipped(order_id: str) -> bool:
            return bool(
                scalar(fresh_database, "SELECT count(*) FROM shop_shipment WHERE order_id = %s", (order_id,))
            )

        # A committed message: delivered at once, with no beat and no sweep.
        sent = run(
            [*manage, "shell", "-c", "from shop.checkers import pay; print(pay('order-1').message_state)"],
            cwd=project,
            env=env,
        )
        assert sent.strip().splitlines()[-1] == "COMMITTED"
        wait_until(lambda: shipped("order-1"), timeout=60, what="order-1 shipped by the worker")

        # A message whose local transaction committed but answered UNKNOWN (as when its
        # process dies before answering): txbroker_check asks the README's checker.
        unknown = (
            "from txbroker import LocalTransactionState, OutgoingMessage\n"
            "from shop.checkers import producer\n"
            "from shop.models import Payment\n"
            "def record(message, order_id):\n"
            "    Payment.objects.create(order_id=order_id)\n"
            "    return LocalTransactionState.UNKNOWN\n"
            "message = OutgoingMessage(topic='shop_payments', tag='paid', keys=['order-2'], body={'order_id': 'order-2'})\n"
            "print(producer.send_message_in_transaction(message, record, 'order-2').message_state)\n"
        )
        assert run([*manage, "shell", "-c", unknown], cwd=project, env=env).strip().splitlines()[-1] == "HALF"
        assert "python manage.py txbroker_check" in readme_commands

        def checked() -> bool:
            run([*manage, "txbroker_check"], cwd=project, env=env)
            state = "SELECT m.state FROM txbroker_message m JOIN txbroker_messagekey k ON k.message_id = m.msg_id WHERE k.key = %s"
            return scalar(fresh_database, state, ("order-2",)) == "COMMITTED"

        wait_until(checked, timeout=60, interval=0.5, what="order-2's message committed by check-back")
        wait_until(lambda: shipped("order-2"), timeout=60, what="order-2 shipped by the worker")
        assert "python manage.py txbroker_sweep" in readme_commands
        run([*manage, "txbroker_sweep"], cwd=project, env=env)

        # The optional URLs.
        probe = (
            "from django.test import Client\n"
            "client = Client(HTTP_HOST='localhost')\n"
            "for url in ('/healthz', '/metrics', '/api/txbroker/stats/', '/admin/txbroker/dashboard/'):\n"
            "    print(url, client.get(url).status_code)\n"
        )
        answers = dict(
            line.split()
            for line in run([*manage, "shell", "-c", probe], cwd=project, env=env).splitlines()
            if line.startswith("/")
        )
        assert answers == {
            "/healthz": "200",
            "/metrics": "200",
            "/api/txbroker/stats/": answers["/api/txbroker/stats/"],
            "/admin/txbroker/dashboard/": "302",  # to the admin's login
        }
        assert answers["/api/txbroker/stats/"] in {"401", "403"}  # staff only
    finally:
        worker.stop()
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
