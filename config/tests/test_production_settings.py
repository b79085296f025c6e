"""Production settings: ``check --deploy`` is clean with production environment variables,
the secret key is required when DEBUG is off, cookies and headers are secure."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import Client

from txbroker.tests.processes import ROOT

PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_ALLOWED_HOSTS": "pay.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://pay.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/txbroker",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    # This project ships no real gateway or SMS provider: running the simulations in
    # production is a choice said out loud (without these, check --deploy reports errors:
    # config/tests/test_simulations_refused.py).
    "PAYMENTS_ALLOW_SIMULATED_GATEWAY": "1",
    "NOTIFICATIONS_ALLOW_CONSOLE_SMS": "1",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    child = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PAYMENTS_", "NOTIFICATIONS_"))
    }
    child.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=child, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_reports_nothing_with_production_environment_variables():
    result = manage("check", "--deploy", "--fail-level", "DEBUG", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_the_secret_key_is_required_when_debug_is_off():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", "--deploy", **env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr
    # The web server refuses to start.
    child = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")} | env
    served = subprocess.run(
        [sys.executable, "-c", "import config.wsgi"], cwd=ROOT, env=child, capture_output=True, text=True
    )
    assert served.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in served.stderr


def test_offline_commands_run_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("makemigrations", "--check", "--dry-run", **env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_debug_runs_without_a_secret_key_for_local_use():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    assert manage("check", DJANGO_DEBUG="1", **env).returncode == 0


def test_cookies_are_secure_and_http_only_where_it_matters():
    assert not settings.DEBUG
    assert settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE
    assert settings.SESSION_COOKIE_HTTPONLY


def production_setting(name: str, **env: str) -> str:
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        f"from django.conf import settings; print(repr(settings.{name}))",
        **PRODUCTION_ENV,
        **env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_x_forwarded_proto_is_trusted_only_behind_a_trusted_proxy():
    # No proxy (the default): a client's X-Forwarded-Proto header means nothing.
    assert production_setting("SECURE_PROXY_SSL_HEADER") == "None"
    assert production_setting("NUM_PROXIES") == "0"
    # One proxy, which sets the header (and overwrites the client's).
    assert production_setting("SECURE_PROXY_SSL_HEADER", DJANGO_NUM_PROXIES="1") == str(
        ("HTTP_X_FORWARDED_PROTO", "https")
    )
    assert production_setting("REST_FRAMEWORK['NUM_PROXIES']", DJANGO_NUM_PROXIES="1") == "1"


def test_check_deploy_reports_nothing_behind_a_trusted_proxy_either():
    result = manage("check", "--deploy", "--fail-level", "DEBUG", DJANGO_NUM_PROXIES="1", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.django_db
def test_a_forged_x_forwarded_proto_does_not_make_a_request_secure(settings):
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get("/api/orders/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


@pytest.mark.django_db
def test_responses_carry_the_security_headers():
    response = Client().get("/api/schema/", secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
def test_plain_http_is_redirected_to_https(settings):
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get("/api/orders/")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")
