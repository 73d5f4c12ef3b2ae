"""SIGHUP: templates, catalogs and the log apply at once, every other change asks for a restart.

Against the real daemon: a shop's mail and page templates and its catalog are edited, the log
file is moved away as logrotate does, the log format and a restart-only key
are changed, then SIGHUP — the next mail and the next page use the new
templates, a new log file is started by the daemon and by both worker
processes, in JSON now, and the restart-only key is named and not applied.
"""
from __future__ import annotations

import email
import email.policy
import json
import logging
import signal
import smtplib
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import sample_order
from daemon import logs
from daemon.config import settings_from_dict
from daemon.reload import changed_keys
from daemonproc import ROOT, Daemon, free_port, wait_until

BUILTIN = ROOT / "templates"


def _shop_templates(folder: Path, version: str) -> tuple[Path, Path]:
    mail, page = folder / "mail", folder / "page"
    mail.mkdir(parents=True, exist_ok=True)
    page.mkdir(parents=True, exist_ok=True)
    text = (BUILTIN / "mail" / "message.txt").read_text(encoding="utf-8")
    (mail / "message.de.txt").write_text(
        f"Subject: [{version}] Nachricht zu {{{{ order.number }}}}\n" + text.partition("\n")[2], encoding="utf-8")
    catalog = mail / "locale" / "de" / "LC_MESSAGES" / "ordermail.po"     # the shop's words for one message
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text('msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\n"\n\n'
                       'msgid "Your order at a glance: %(status_url)s"\n'
                       f'msgstr "{version}, Ihre Bestellung: %(status_url)s"\n', encoding="utf-8")
    order_page = (BUILTIN / "page" / "order.html").read_text(encoding="utf-8")
    (page / "order.html").write_text(order_page.replace("<h1>", f"<h1>{version} ", 1), encoding="utf-8")
    return mail, page


def _ordermail(daemon: Daemon, *args: str, stdin: str = "") -> str:
    result = subprocess.run([sys.executable, "-m", "daemon.cli.main", *args, "--config", str(daemon.config)],
                            input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _text_of(daemon: Daemon, subject: str) -> str:
    for f in sorted((daemon.maildir / "new").iterdir()):
        mail = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        if mail["Subject"] == subject:
            return mail.get_body(("plain",)).get_content()
    raise AssertionError(f"no mail {subject!r}")


def _subjects(daemon: Daemon) -> list[str]:
    new = daemon.maildir / "new"
    files = sorted(new.iterdir()) if new.is_dir() else []
    return [email.message_from_bytes(f.read_bytes())["Subject"] for f in files]


def _message_mailed(daemon: Daemon, text: str, wanted: str) -> None:
    _ordermail(daemon, "command", f"message 1042 {text}")
    wait_until(lambda: any(wanted in (s or "") for s in _subjects(daemon)), 30)


def _page(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8"), response.headers["ETag"]


def test_sighup_applies_templates_and_log_and_names_what_needs_a_restart(tmp_path):
    mail, page = _shop_templates(tmp_path / "shop", "Version 1")
    log_file, port = tmp_path / "ordermail.log", free_port()
    daemon = Daemon(tmp_path, f"sqlite:///{tmp_path}/ordermail.db", max_message_bytes=1048576,
                    outbound_extra=f"templates_dir = {json.dumps(str(mail))}\n", web_listen=f"127.0.0.1:{port}",
                    extra=f"templates_dir = {json.dumps(str(page))}\n[log]\nfile = {json.dumps(str(log_file))}\n")
    try:
        daemon.start()
        wait_until(lambda: log_file.exists() and "ordermail ready" in log_file.read_text(), 30)
        _ordermail(daemon, "order", "create", "--json", "-", "--quiet", stdin=json.dumps(sample_order()))
        status_url = json.loads(_ordermail(daemon, "order", "show", "1042", "--format", "json"))["status_url"]
        url = f"http://127.0.0.1:{port}/o/" + status_url.rpartition("/o/")[2]
        _message_mailed(daemon, "erste", "[Version 1] Nachricht zu 1042")
        assert "Version 1, Ihre Bestellung: https://" in _text_of(daemon, "[Version 1] Nachricht zu 1042")
        before, tag_before = _page(url)
        assert "<h1>Version 1 " in before

        _shop_templates(tmp_path / "shop", "Version 2")
        log_file.rename(tmp_path / "ordermail.log.1")          # as logrotate does, then HUP
        config = daemon.config.read_text()
        daemon.config.write_text(config.replace("max_message_bytes = 1048576", "max_message_bytes = 2097152")
                                 .replace("[log]\n", '[log]\nformat = "json"\n'))
        workers = daemon.worker_pids()
        daemon.process.send_signal(signal.SIGHUP)

        lines = wait_until(lambda: _json_lines_once(log_file, len(workers) + 2), 30)
        messages = [line["message"] for line in lines]
        # Only the key that needs a restart is named: the templates and [log] format applied.
        assert [m for m in messages if m.endswith("restart ordermail to apply")] == [
            "[inbound] max_message_bytes changed; restart ordermail to apply"]
        assert {f"worker process {pid}: log opened anew, mail templates read again" for pid in workers} <= set(messages)
        assert "reloaded" not in (tmp_path / "ordermail.log.1").read_text()

        _message_mailed(daemon, "zweite", "[Version 2] Nachricht zu 1042")
        assert "Version 2, Ihre Bestellung: https://" in _text_of(daemon, "[Version 2] Nachricht zu 1042")
        after, tag_after = _page(url)
        assert "<h1>Version 2 " in after and tag_after != tag_before
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as smtp:     # not applied: a restart is
            smtp.ehlo()
            assert smtp.esmtp_features["size"] == "1048576"

        # A file that no longer loads changes nothing; the daemon says so and goes on.
        daemon.config.write_text("[shop\nname = ")
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration not reloaded" in log_file.read_text(), 30)
        assert daemon.process.poll() is None
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as smtp:
            refused = smtp.sendmail("kunde@example.org", ["orders@shop.example"],
                                    b"From: kunde@example.org\r\nSubject: Frage\r\n\r\nHallo\r\n")
        assert refused == {}
        assert daemon.stop() == 0
        handled = [json.loads(line) for line in log_file.read_text().splitlines() if '"inbound_id"' in line]
        assert handled and handled[0]["inbound_id"] == 1 and handled[0]["state"] == "done"     # the extras passed
    finally:
        daemon.kill()


def _json_lines_once(path: Path, at_least: int):
    """The file's lines as JSON, once it holds the reload's line and `at_least` lines."""
    if not path.exists():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines()]    # every line is JSON
    done = any(line["message"].startswith("reloaded") for line in lines) and len(lines) >= at_least
    return lines if done else None


def test_changed_keys_are_named_as_the_file_names_them():
    base = {"shop": {"name": "Teeladen"}, "payment": {"paypal": {"label": "PayPal"}}}
    before = settings_from_dict(base)
    after = settings_from_dict({"shop": {"name": "Teeladen"}, "inbound": {"imap": {"host": "imap.example"}},
                                "payment": {"paypal": {"label": "PayPal Express"}, "card": {"label": "Karte"}},
                                "log": {"format": "json"}})
    assert changed_keys(before, after) == ["[inbound.imap] host", "[payment.card]", "[payment.paypal] label",
                                           "[log] format"]
    assert changed_keys(before, settings_from_dict(base)) == []


def test_json_lines_carry_time_level_logger_message_and_the_extras_passed():
    record = logging.LogRecord("ordermail.inbound", logging.WARNING, __file__, 1, "message %s %s", (7, "done"), None)
    record.message_id, record.order = 7, "1042"             # what extra={...} puts on a record
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "ordermail.inbound"
    assert line["message"] == "message 7 done" and line["message_id"] == 7 and line["order"] == "1042"
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("ordermail", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "failed" and "ValueError: bad" in line["exception"]
