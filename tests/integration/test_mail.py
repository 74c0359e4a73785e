"""Mail end to end: an app calling Google's SDK (google.appengine.api.mail)
on `cyclozzo --start application`.

- With `--smtp-host`, messages reach a real SMTP server (aiosmtpd, run by
  this test on loopback, with AUTH) and are checked by parsing what it
  received with Python's email package.
- Without it, they are kept in the outbox and read back with
  `cyclozzo --mail-outbox`.
- Inbound mail: `cyclozzo --deliver-mail` hands a message to the app's
  `login: admin` /_ah/mail/ handler."""
import base64
import email
import email.policy
import os
import re
import shutil
import sys
import threading

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import ROOT, assert_clean_logs, cz, free_port

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

APP = os.path.join(ROOT, "tests", "integration", "apps", "mfapp")
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
ADMIN, ADMIN2, USER = "boss@example.com", "chief@example.com", "worker@example.com"
PASSWORD = "long-enough-pw"


class Sink:
    """aiosmtpd handler keeping every envelope it is given."""

    def __init__(self):
        self.got = []
        self.logins = []
        self.cv = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        with self.cv:
            self.got.append(envelope)
            self.cv.notify_all()
        return "250 OK"

    def auth(self, server, session, envelope, mechanism, data):
        ok = data.login == b"relayuser" and data.password == b"relay-secret"
        self.logins.append((mechanism, data.login, ok))
        return AuthResult(success=ok)

    def wait(self, n, timeout=15):
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.got) >= n, timeout), f"{len(self.got)} messages, wanted {n}"
            return self.got[n - 1]


def app_yaml(name, inbound):
    y = f"runtime: python311\napplication: {name}\nentrypoint: {sys.executable} -W ignore main.py\n"
    if inbound:
        y += "inbound_services:\n- mail\n"
    y += "handlers:\n- url: /_ah/mail/.+\n  script: auto\n  login: admin\n- url: /.*\n  script: auto\n"
    return y


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlhome")
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    for who, admin in ((ADMIN, True), (ADMIN2, True), (USER, False)):
        cz("--add-user", who, *(["--admin"] if admin else []), "--password-stdin", input=PASSWORD + "\n", env=env)
    sink = Sink()
    smtp_port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=smtp_port, authenticator=sink.auth,
                     auth_required=True, auth_require_tls=False)
    ctl.start()
    pwfile = tmp_path_factory.mktemp("secret") / "smtp-password"
    pwfile.write_text("relay-secret\n")
    apps = {}
    for name, relay in (("mfapp", True), ("mfout", False)):
        d = tmp_path_factory.mktemp(name)
        shutil.copytree(APP, d, dirs_exist_ok=True)
        (d / "app.yaml").write_text(app_yaml(name, inbound=relay))
        port = free_port()
        extra = ["--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port), "--smtp-user", "relayuser",
                 "--smtp-password-file", str(pwfile)] if relay else []
        cz("--start", "application", "--dir", str(d), "--port", str(port), *extra, env=env, timeout=300)
        apps[name] = f"http://127.0.0.1:{port}"
    yield {"env": env, "home": str(home), "sink": sink, "apps": apps}
    for base in apps.values():
        cz("--stop", "application", "--port", base.rsplit(":", 1)[1], env=env, check=False)
    ctl.stop()
    assert_clean_logs(str(home))


def call(base, path, body, session=None):
    r = (session or requests).post(base + path, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_send_through_relay_with_everything(ml):
    n = len(ml["sink"].got)
    r = call(ml["apps"]["mfapp"], "/send", {
        "sender": f"Big Boss <{ADMIN}>", "to": ["Ann Ärger <ann@example.org>", "bob@example.org"],
        "cc": ["carl@example.org"], "bcc": ["dora@example.org"], "reply_to": "replies@example.org",
        "subject": "Grüße – the weekly report", "body": "Hello Ann,\nsee the report.\n— Boss",
        "html": "<p>Hello <b>Ann</b> <img src=\"cid:logo\"></p>",
        "attachments": [["report.txt", base64.b64encode(b"line 1\nline 2\n").decode()],
                        ["logo.png", base64.b64encode(PNG).decode(), "<logo>"]],
        "headers": {"In-Reply-To": "<abc@example.org>", "List-Id": "reports.example.org"}})
    assert r == {"ok": True}
    env = ml["sink"].wait(n + 1)
    assert env.mail_from == ADMIN
    assert sorted(env.rcpt_tos) == ["ann@example.org", "bob@example.org", "carl@example.org", "dora@example.org"]
    assert ml["sink"].logins and ml["sink"].logins[-1][1:] == (b"relayuser", True)
    m = parse(env.original_content)
    assert m["From"].addresses[0].display_name == "Big Boss" and m["From"].addresses[0].addr_spec == ADMIN
    assert [a.addr_spec for a in m["To"].addresses] == ["ann@example.org", "bob@example.org"]
    assert m["To"].addresses[0].display_name == "Ann Ärger"
    assert m["Cc"].addresses[0].addr_spec == "carl@example.org"
    assert m["Bcc"] is None and b"dora" not in env.original_content
    assert m["Reply-To"].addresses[0].addr_spec == "replies@example.org"
    assert str(m["Subject"]) == "Grüße – the weekly report"
    assert m["In-Reply-To"] == "<abc@example.org>" and m["List-Id"] == "reports.example.org"
    assert m["Message-ID"].endswith("@mfapp.appspotmail.com>") and m["Date"].datetime is not None
    assert all(ord(c) < 128 for c in env.original_content.decode("latin-1"))   # headers encoded, bodies transfer-encoded
    assert m.get_content_type() == "multipart/mixed"
    parts = list(m.iter_parts())
    assert parts[0].get_content_type() == "multipart/alternative"
    alt = list(parts[0].iter_parts())
    assert [p.get_content_type() for p in alt] == ["text/plain", "text/html"]
    assert alt[0].get_content().replace("\r\n", "\n") == "Hello Ann,\nsee the report.\n— Boss"
    assert "<b>Ann</b>" in alt[1].get_content()
    assert parts[1].get_filename() == "report.txt" and parts[1].get_content_type() == "text/plain"
    assert parts[1].get_payload(decode=True).replace(b"\r\n", b"\n") == b"line 1\nline 2\n"
    assert parts[2].get_filename() == "logo.png" and parts[2].get_content_type() == "image/png"
    assert parts[2]["Content-ID"] == "<logo>" and parts[2].get_payload(decode=True) == PNG


def test_text_only_message(ml):
    n = len(ml["sink"].got)
    r = call(ml["apps"]["mfapp"], "/send", {"sender": "noreply@mfapp.appspotmail.com", "to": "x@example.net",
                                            "subject": "plain", "body": "just text"})
    assert r == {"ok": True}
    m = parse(ml["sink"].wait(n + 1).original_content)
    assert m.get_content_type() == "text/plain" and m.get_content().strip() == "just text"


def test_sender_rules(ml):
    base = ml["apps"]["mfapp"]
    for sender in ("stranger@example.com", USER, "someone@otherapp.appspotmail.com"):
        r = call(base, "/send", {"sender": sender, "to": "x@example.net", "subject": "s", "body": "b"})
        assert r["error"] == "InvalidSenderError", (sender, r)
    assert call(base, "/send", {"sender": ADMIN2, "to": "x@example.net", "subject": "s", "body": "b"}) == {"ok": True}
    # the signed-in user may send as themselves
    s = requests.Session()
    r = s.post(base + "/_ah/login", data={"email": USER, "password": PASSWORD, "continue": "/"}, allow_redirects=False)
    assert r.status_code == 302, r.text
    assert call(base, "/send", {"sender": USER, "to": "x@example.net", "subject": "s", "body": "b"}, s) == {"ok": True}


def test_send_to_admins(ml):
    n = len(ml["sink"].got)
    r = call(ml["apps"]["mfapp"], "/send", {"kind": "admins", "sender": ADMIN, "subject": "to admins", "body": "hi admins"})
    assert r == {"ok": True}
    env = ml["sink"].wait(n + 1)
    assert sorted(env.rcpt_tos) == [ADMIN, ADMIN2]
    assert USER not in env.rcpt_tos


def test_service_checks(ml):
    base = ml["apps"]["mfapp"]
    r = call(base, "/raw", {"sender": ADMIN, "to": ["a@example.org"], "headers": [["X-Evil", "1"]]})
    assert r["code"] == 5, r                                   # INVALID_HEADER_NAME
    r = call(base, "/raw", {"sender": ADMIN, "to": ["a@example.org"], "attachments": [["run.exe", "AAAA"]]})
    assert r["code"] == 4, r                                   # INVALID_ATTACHMENT_TYPE
    r = call(base, "/raw", {"sender": ADMIN, "to": ["a@example.org"], "attachments": [["a.png", "AAAA", "no-brackets"]]})
    assert r["code"] == 6, r                                   # INVALID_CONTENT_ID
    r = call(base, "/raw", {"sender": ADMIN, "to": []})
    assert r["code"] == 2, r                                   # BAD_REQUEST: no recipients
    r = call(base, "/raw", {"sender": ADMIN, "to": ["not an address"]})
    assert r["code"] == 2, r
    r = call(base, "/raw", {"sender": "intruder@example.com", "to": ["a@example.org"]})
    assert r["code"] == 3, r                                   # UNAUTHORIZED_SENDER


def test_outbox_mode(ml):
    base = ml["apps"]["mfout"]
    r = call(base, "/send", {"sender": "news@mfout.appspotmail.com", "to": ["reader@example.org"],
                             "bcc": ["hidden@example.org"], "subject": "Outbox ✓", "body": "kept",
                             "html": "<i>kept</i>",
                             "attachments": [["data.csv", base64.b64encode(b"a,b\n1,2\n").decode()]]})
    assert r == {"ok": True}
    r = call(base, "/send", {"sender": "stranger@example.com", "to": ["reader@example.org"], "subject": "x", "body": "y"})
    assert r["error"] == "InvalidSenderError"
    out = cz("--mail-outbox", "mfout", env=ml["env"]).stdout
    rows = [l for l in out.splitlines()[1:] if l.strip()]
    assert len(rows) == 1, out
    assert "news@mfout.appspotmail.com" in rows[0] and "reader@example.org, hidden@example.org" in rows[0]
    assert "Outbox ✓" in rows[0] and "held" in rows[0]
    msg_id = rows[0].split()[0]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", msg_id)
    shown = cz("--mail-outbox", "mfout", "--show", msg_id, env=ml["env"]).stdout
    m = parse(shown.encode())
    assert str(m["Subject"]) == "Outbox ✓" and m["Bcc"] is None
    att = [p for p in m.iter_attachments()]
    assert att[0].get_filename() == "data.csv" and att[0].get_payload(decode=True) == b"a,b\n1,2\n"
    # durable: plain files under CYCLOZZO_HOME
    assert os.path.exists(os.path.join(ml["home"], "mail", "outbox", "mfout", msg_id + ".eml"))
    # the relayed app keeps nothing; unknown ids and apps are clear errors
    assert "(no messages in the outbox of mfapp)" in cz("--mail-outbox", "mfapp", env=ml["env"]).stdout
    p = cz("--mail-outbox", "mfout", "--show", "20990101T000000Z-00000000", env=ml["env"], check=False)
    assert p.returncode == 1 and "has no message" in p.stderr


def test_inbound_mail(ml, tmp_path):
    base = ml["apps"]["mfapp"]
    eml = tmp_path / "in.eml"
    eml.write_bytes(b"From: Carol <carol@example.org>\r\nTo: support@mfapp.appspotmail.com\r\n"
                    b"Subject: Help please\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                    b"My widget broke.\r\n")
    p = cz("--deliver-mail", "mfapp", "--to", "support@mfapp.appspotmail.com", str(eml), env=ml["env"])
    assert "delivered" in p.stdout
    with open(eml, "rb") as f:      # and from stdin
        p = subprocess_cz(ml, ["--deliver-mail", "mfapp", "--to", "sales@mfapp.appspotmail.com"], f)
    assert p.returncode == 0, p.stderr
    rows = requests.get(base + "/inbound", timeout=30).json()
    assert [r["path"] for r in rows] == ["/_ah/mail/support@mfapp.appspotmail.com", "/_ah/mail/sales@mfapp.appspotmail.com"]
    assert rows[0]["sender"] == "Carol <carol@example.org>" and rows[0]["subject"] == "Help please"
    assert rows[0]["text"][0].strip() == "My widget broke."
    # without the platform's proof the admin-only handler is closed
    r = requests.post(base + "/_ah/mail/support@mfapp.appspotmail.com", data=eml.read_bytes(), allow_redirects=False, timeout=30)
    assert r.status_code in (302, 401, 403)
    assert len(requests.get(base + "/inbound", timeout=30).json()) == 2
    # an app that does not declare inbound mail is refused
    p = cz("--deliver-mail", "mfout", "--to", "a@mfout.appspotmail.com", str(eml), env=ml["env"], check=False)
    assert p.returncode == 1 and "inbound_services" in p.stderr
    p = cz("--deliver-mail", "nosuchapp", "--to", "a@x.appspotmail.com", str(eml), env=ml["env"], check=False)
    assert p.returncode == 1 and "no app named nosuchapp" in p.stderr


def subprocess_cz(ml, args, stdin):
    import subprocess
    from conftest import BIN
    return subprocess.run([os.path.join(BIN, "cyclozzo"), *args], stdin=stdin, env=ml["env"], capture_output=True,
                          text=True, timeout=60)


def test_relay_failure_keeps_the_message(ml, tmp_path):
    d = tmp_path / "mfdead"
    shutil.copytree(APP, d)
    (d / "app.yaml").write_text(app_yaml("mfdead", inbound=False))
    port, dead = free_port(), free_port()
    cz("--start", "application", "--dir", str(d), "--port", str(port), "--smtp-host", "127.0.0.1",
       "--smtp-port", str(dead), env=ml["env"], timeout=300)
    try:
        r = call(f"http://127.0.0.1:{port}", "/send", {"sender": "a@mfdead.appspotmail.com", "to": "x@example.org",
                                                        "subject": "undeliverable", "body": "b"})
        assert r["error"] == "ApplicationError" and "kept in the outbox" in r["message"], r
        out = cz("--mail-outbox", "mfdead", env=ml["env"]).stdout
        assert "undeliverable" in out and "failed: the SMTP relay 127.0.0.1:%d" % dead in out, out
    finally:
        cz("--stop", "application", "--port", str(port), env=ml["env"], check=False)
