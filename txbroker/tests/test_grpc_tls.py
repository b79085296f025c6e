"""``txbroker_grpc --tls-cert --tls-key``: the official client with ``tls_enable=True``
sends over TLS (trusting the test's self-signed certificate); a plain-TCP client cannot."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from txbroker.models import Message
from txbroker.tests.processes import child_env, start_grpc

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CLIENT = textwrap.dedent(
    """
    import sys
    from rocketmq import ClientConfiguration, Credentials, Message, Producer

    endpoint, access_key, secret, tls = sys.argv[1:5]
    config = ClientConfiguration(endpoint, Credentials(access_key, secret), request_timeout=5)
    producer = Producer(config, ("grpc-tls",), tls_enable=tls == "tls")
    producer.startup()
    try:
        message = Message()
        message.topic = "grpc-tls"
        message.body = b'{"secure":true}'
        print("sent", producer.send(message).message_id, flush=True)
    finally:
        producer.shutdown()
    """
)


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def run_client(tmp_path, server, mode: str, cert) -> subprocess.CompletedProcess:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    return subprocess.run(
        [sys.executable, str(script), server.endpoint, server.access_key, server.secret, mode],
        env=child_env(GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(cert)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tls_serves_a_tls_client_and_no_plain_one(broker_env, tmp_path, certificate):
    cert, key = certificate
    server = start_grpc(tmp_path, extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    try:
        assert "(TLS)" in server.proc.log()
        secure = run_client(tmp_path, server, "tls", cert)
        plain = run_client(tmp_path, server, "plain", cert)
    finally:
        server.proc.stop()
    assert secure.returncode == 0, secure.stdout + secure.stderr
    msg_id = secure.stdout.split()[-1]
    assert Message.objects.get(pk=msg_id).body == {"secure": True}
    assert plain.returncode != 0 and "sent" not in plain.stdout
    assert Message.objects.count() == 1
