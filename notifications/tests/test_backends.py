from __future__ import annotations

import pytest
from django.utils.module_loading import import_string

from notifications.backends import (
    ConsoleSmsBackend,
    FileSmsBackend,
    InMemorySmsBackend,
    SmsBackend,
    get_sms_backend,
    phone_masked,
)


def test_the_setting_picks_the_backend(settings):
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.backends.ConsoleSmsBackend"
    assert isinstance(get_sms_backend(), ConsoleSmsBackend)


def test_console_backend_writes_to_stdout_with_the_number_masked(capsys):
    provider_id = ConsoleSmsBackend().send(to="+8613800138000", text="hello")
    out = capsys.readouterr().out
    assert f"[SMS {provider_id}] to +*********8000: hello" in out
    assert "13800138000" not in out


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("+8613800138000", "+*********8000"), ("13800138000", "*******8000"), ("+123456", "+****56")],
)
def test_phone_masked_keeps_only_the_last_digits(phone, masked):
    assert phone_masked(phone) == masked


@pytest.mark.parametrize(
    "backend",
    [ConsoleSmsBackend, InMemorySmsBackend, FileSmsBackend, "harness.bench.backends.NullSmsBackend"],
)
def test_the_backends_here_are_simulations(backend):
    backend = import_string(backend) if isinstance(backend, str) else backend
    assert backend.simulated and not SmsBackend.simulated


def test_in_memory_backend_keeps_an_outbox(sms_outbox):
    InMemorySmsBackend().send(to="+861", text="hello")
    assert [(s.to, s.text) for s in sms_outbox] == [("+861", "hello")]


def test_file_backend_appends_json_lines(settings, tmp_path):
    settings.NOTIFICATIONS_SMS_FILE_PATH = str(tmp_path / "out" / "sms.jsonl")
    backend = FileSmsBackend()
    backend.send(to="+861", text="one")
    backend.send(to="+862", text="two")

    sent = FileSmsBackend.read(tmp_path / "out" / "sms.jsonl")

    assert [(s.to, s.text) for s in sent] == [("+861", "one"), ("+862", "two")]
