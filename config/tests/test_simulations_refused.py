"""Production refuses the simulations: with DEBUG off, the simulated payment gateway (it
approves any amount) and the simulated SMS backends (console, file, in-memory: they send
nothing) stop web, worker and beat at start-up and are an Error of ``check --deploy``,
unless PAYMENTS_ALLOW_SIMULATED_GATEWAY / NOTIFICATIONS_ALLOW_CONSOLE_SMS say the operator
chose them knowingly. Real processes: gunicorn, a Celery worker and beat."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from harness.procs import Proc, free_port, http_ok, wait_until, worker_argv
from notifications.backends import SIMULATED_SMS_REFUSED, get_sms_backend
from payments.gateways import SIMULATED_GATEWAY_REFUSED, get_gateway
from payments.management.commands.demo_superuser import DEBUG_REQUIRED, USER_EXISTS
from txbroker.tests.processes import ROOT, child_env

GATEWAY = "payments.gateways.SimulatedGateway"
CONSOLE_SMS = "notifications.backends.ConsoleSmsBackend"
GATEWAY_REFUSED = SIMULATED_GATEWAY_REFUSED.format(backend=GATEWAY)
SMS_REFUSED = SIMULATED_SMS_REFUSED.format(backend=CONSOLE_SMS)
ALLOWED = {"PAYMENTS_ALLOW_SIMULATED_GATEWAY": "1", "NOTIFICATIONS_ALLOW_CONSOLE_SMS": "1"}
# Not simulations (the interfaces themselves): what a real provider's backend looks like here.
REAL_BACKENDS = {
    "PAYMENTS_GATEWAY_BACKEND": "payments.gateways.PaymentGateway",
    "NOTIFICATIONS_SMS_BACKEND": "notifications.backends.SmsBackend",
}


def production_env(**extra: str) -> dict[str, str]:
    """DEBUG off, a secret key, the default (simulated) backends, no permission."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "PAYMENTS_", "NOTIFICATIONS_")) and k != "DATABASE_URL"
    }
    env.update(
        {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,pay.example.com",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "https://pay.example.com",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/txbroker",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        }
    )
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# --- check --deploy -------------------------------------------------------------------------
def test_check_deploy_reports_an_error_for_each_simulation_without_permission():
    result = manage("check", "--deploy", env=production_env())

    assert result.returncode != 0
    assert f"(payments.E001) {GATEWAY_REFUSED}" in result.stderr
    assert f"(notifications.E001) {SMS_REFUSED}" in result.stderr


@pytest.mark.parametrize("backends", [ALLOWED, REAL_BACKENDS], ids=["simulations allowed", "real backends"])
def test_check_deploy_is_quiet_when_the_operator_allowed_them_or_with_real_backends(backends):
    result = manage("check", "--deploy", "--fail-level", "DEBUG", env=production_env(**backends))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_the_file_and_in_memory_sms_backends_count_as_simulations():
    for backend in ("notifications.backends.FileSmsBackend", "notifications.backends.InMemorySmsBackend"):
        env = production_env(PAYMENTS_ALLOW_SIMULATED_GATEWAY="1", NOTIFICATIONS_SMS_BACKEND=backend)
        result = manage("check", "--deploy", env=env)
        assert result.returncode != 0
        assert SIMULATED_SMS_REFUSED.format(backend=backend) in result.stderr
        assert "payments.E001" not in result.stderr


def test_offline_commands_still_run():
    result = manage("makemigrations", "--check", "--dry-run", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr


def test_debug_allows_the_simulations_for_local_use():
    assert manage("check", env=production_env(DJANGO_DEBUG="1")).returncode == 0


def test_the_backends_refuse_to_be_made_in_a_process_without_permission(settings):
    settings.DEBUG = False
    settings.PAYMENTS_ALLOW_SIMULATED_GATEWAY = False
    settings.NOTIFICATIONS_ALLOW_CONSOLE_SMS = False
    settings.NOTIFICATIONS_SMS_BACKEND = CONSOLE_SMS

    with pytest.raises(ImproperlyConfigured, match="PAYMENTS_ALLOW_SIMULATED_GATEWAY=1"):
        get_gateway()
    with pytest.raises(ImproperlyConfigured, match="NOTIFICATIONS_ALLOW_CONSOLE_SMS=1"):
        get_sms_backend()

    settings.PAYMENTS_ALLOW_SIMULATED_GATEWAY = True
    settings.NOTIFICATIONS_ALLOW_CONSOLE_SMS = True
    assert get_gateway().simulated and get_sms_backend().simulated


# --- real processes ---------------------------------------------------------------------------
def served_env(**extra: str) -> dict[str, str]:
    """production_env on the test database and Redis (a server that starts must answer)."""
    test_db = child_env()
    return production_env(
        DATABASE_URL=test_db["DATABASE_URL"],
        CELERY_BROKER_URL=test_db["CELERY_BROKER_URL"],
        DJANGO_SECURE_SSL_REDIRECT="0",
        **extra,
    )


def exited(proc: Proc, timeout: float = 60) -> int:
    wait_until(lambda: not proc.alive(), timeout=timeout, what=f"{proc.name} to exit")
    return proc.popen.returncode


def gunicorn_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "config.wsgi", f"--bind=127.0.0.1:{port}", "--workers=1"]


@pytest.mark.integration
def test_gunicorn_refuses_to_start_with_a_simulation_and_starts_when_allowed(transactional_db, tmp_path):
    refused = Proc("web-refused", gunicorn_argv(free_port()), served_env(), tmp_path)
    try:
        assert exited(refused) != 0
        assert GATEWAY_REFUSED in refused.log()
        assert SMS_REFUSED in refused.log()
    finally:
        refused.stop()

    port = free_port()
    allowed = Proc("web-allowed", gunicorn_argv(port), served_env(**ALLOWED), tmp_path)
    try:
        wait_until(
            lambda: not allowed.alive() or http_ok(f"http://127.0.0.1:{port}/healthz"),
            timeout=60,
            what="gunicorn to answer",
        )
        assert allowed.alive(), allowed.log()[-3000:]
    finally:
        allowed.stop()


@pytest.mark.integration
def test_a_celery_worker_refuses_to_start_with_a_simulation_and_starts_when_allowed(
    transactional_db, tmp_path
):
    argv = worker_argv(name="refusing", concurrency=1, loglevel="INFO")
    refused = Proc("worker-refused", argv, served_env(PAYMENTS_ALLOW_SIMULATED_GATEWAY="1"), tmp_path)
    try:
        assert exited(refused) != 0
        assert SMS_REFUSED in refused.log()
        assert "ready." not in refused.log()
    finally:
        refused.stop()

    argv = worker_argv(name="allowed", concurrency=1, loglevel="INFO")
    allowed = Proc("worker-allowed", argv, served_env(**ALLOWED), tmp_path)
    try:
        wait_until(
            lambda: "ready." in allowed.log() or not allowed.alive(), timeout=60, what="the worker ready"
        )
        assert allowed.alive(), allowed.log()[-3000:]
    finally:
        allowed.stop()


@pytest.mark.integration
def test_celery_beat_refuses_to_start_with_a_simulation(transactional_db, tmp_path):
    argv = [
        *[sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO"],
        f"--schedule={tmp_path / 'beat-schedule'}",
    ]
    refused = Proc("beat-refused", argv, served_env(NOTIFICATIONS_ALLOW_CONSOLE_SMS="1"), tmp_path)
    try:
        assert exited(refused) != 0
        assert GATEWAY_REFUSED in refused.log()
    finally:
        refused.stop()


# --- demo_superuser -------------------------------------------------------------------------
@pytest.mark.django_db
def test_demo_superuser_refuses_to_run_with_debug_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=1 only"):
        call_command("demo_superuser", username="root", password="a-password-1", stdout=StringIO())
    assert not get_user_model().objects.filter(username="root").exists()


def test_demo_superuser_exits_non_zero_with_debug_off():
    result = manage(
        "demo_superuser", "--username", "root", "--password", "a-password-1", env=production_env()
    )
    assert result.returncode != 0
    assert DEBUG_REQUIRED in result.stderr


@pytest.mark.django_db
def test_demo_superuser_creates_with_debug_on(settings):
    settings.DEBUG = True
    out = StringIO()

    call_command("demo_superuser", username="demo-admin", password="a-password-1", stdout=out)

    user = get_user_model().objects.get(username="demo-admin")
    assert user.is_staff and user.is_superuser and user.check_password("a-password-1")
    assert "created" in out.getvalue()


@pytest.mark.django_db
def test_demo_superuser_never_touches_an_existing_account(settings):
    settings.DEBUG = True
    existing = get_user_model().objects.create_user("alice", password="alices-own-password")

    with pytest.raises(CommandError) as refused:
        call_command("demo_superuser", username="alice", password="a-password-1", stdout=StringIO())
    out = StringIO()
    call_command("demo_superuser", username="alice", password="a-password-1", exists_ok=True, stdout=out)

    assert str(refused.value) == USER_EXISTS.format(username="alice")
    assert "left unchanged" in out.getvalue()
    existing.refresh_from_db()
    assert not existing.is_staff and not existing.is_superuser
    assert existing.check_password("alices-own-password")
