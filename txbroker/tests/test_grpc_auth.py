"""The gRPC endpoint's signature check (RocketMQ's MQv2-HMAC-SHA1 over x-mq-date-time) and
its command's refusals."""

from __future__ import annotations

import subprocess
import time

import pytest
from django.core.management import CommandError, call_command

from txbroker.grpcapi.auth import DATE_FORMAT, refusal, sign
from txbroker.tests.processes import child_env, manage_argv, project_dir

CREDENTIALS = {"erp": "s3cret", "crm": "other"}
NOW = 1_800_000_000.0


def headers(access_key="erp", secret=CREDENTIALS["erp"], at=NOW, algorithm="MQv2-HMAC-SHA1"):
    date_time = time.strftime(DATE_FORMAT, time.gmtime(at))
    authorization = f"{algorithm} Credential={access_key}, SignedHeaders=x-mq-date-time, Signature={sign(secret, date_time)}"
    return [("x-mq-date-time", date_time), ("authorization", authorization), ("x-mq-client-id", "c1")]


def test_a_good_signature_within_the_skew_passes():
    assert refusal(headers(), CREDENTIALS, 300, now=NOW + 299) is None
    assert refusal(headers("crm", "other"), CREDENTIALS, 300, now=NOW) is None


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([], "no authorization header"),
        (headers(secret="guess"), "wrong signature"),
        (headers(access_key="nobody"), "unknown access key"),
        (headers(algorithm="MQv1-HMAC-MD5"), "is not MQv2-HMAC-SHA1"),
        (headers(at=NOW - 301), "301s off"),
        (headers(at=NOW + 3600), "3600s off"),
    ],
)
def test_bad_or_missing_signatures_are_refused(metadata, reason):
    assert reason in refusal(metadata, CREDENTIALS, 300, now=NOW)


def test_the_date_check_can_be_turned_off():
    assert refusal(headers(at=NOW - 86400), CREDENTIALS, 0, now=NOW) is None


def test_no_credentials_means_loopback_only(settings):
    settings.TXBROKER_GRPC_CREDENTIALS = ""
    with pytest.raises(CommandError, match=r"refusing to bind 0\.0\.0\.0:0 without credentials"):
        call_command("txbroker_grpc", "--bind", "0.0.0.0:0")
    with pytest.raises(CommandError, match=r"refusing to bind \[::\]:0 without credentials"):
        call_command("txbroker_grpc", "--bind", "[::]:0")


def test_tls_needs_a_certificate_and_its_key(settings, tmp_path):
    with pytest.raises(CommandError, match="TLS needs both"):
        call_command("txbroker_grpc", "--bind", "127.0.0.1:0", "--tls-cert", str(tmp_path / "cert.pem"))


@pytest.mark.django_db
def test_the_refusal_is_one_line_and_a_non_zero_exit():
    result = subprocess.run(
        manage_argv("txbroker_grpc", "--bind", "0.0.0.0:0"),
        env=child_env(TXBROKER_GRPC_CREDENTIALS=""),
        cwd=project_dir(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "CommandError: refusing to bind 0.0.0.0:0 without credentials: set TXBROKER_GRPC_CREDENTIALS "
        "(access_key:secret,...) or bind a loopback address"
    ]
