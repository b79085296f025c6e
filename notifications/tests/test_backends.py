from __future__ import annotations

from notifications.backends import ConsoleSmsBackend, FileSmsBackend, InMemorySmsBackend, get_sms_backend


def test_the_setting_picks_the_backend(settings):
    settings.NOTIFICATIONS_SMS_BACKEND = "notifications.backends.ConsoleSmsBackend"
    assert isinstance(get_sms_backend(), ConsoleSmsBackend)


def test_console_backend_writes_to_stdout(capsys):
    provider_id = ConsoleSmsBackend().send(to="+861", text="hello")
    assert f"[SMS {provider_id}] to +861: hello" in capsys.readouterr().out


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
