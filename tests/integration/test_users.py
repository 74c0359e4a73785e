"""The users service, platform side: accounts made with the CLI, the sign-in
form at /_ah/login, the session cookie, login: required / admin handlers,
the X-AppEngine-User-* environment an app sees, /_ah/logout, and the
development sign-in of `--start application --dev`."""
import json
import os
import re
import urllib.parse

import pytest
import requests

from conftest import assert_clean_logs, cz, free_port

APP_YAML = r"""runtime: python311
handlers:
- url: /admin/.*
  script: auto
  login: admin
- url: /staff\.txt
  static_files: staff.txt
  upload: staff\.txt
  login: admin
- url: /private
  script: auto
  login: required
- url: /api/.*
  script: auto
  login: required
  auth_fail_action: unauthorized
- url: /.*
  script: auto
"""

# Plain WSGI (no SDK): shows what the runtime put in os.environ for the request.
MAIN_PY = """\
import json, os

KEYS = ["USER_EMAIL", "USER_ID", "USER_IS_ADMIN", "USER_NICKNAME", "AUTH_DOMAIN"]

def app(environ, start_response):
    seen = {k: os.environ.get(k) for k in KEYS}
    seen["cookie"] = environ.get("HTTP_COOKIE", "")
    seen["path"] = environ["PATH_INFO"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]
"""

ALICE = ("alice@example.com", "alice-password-1")
ROOT = ("root@example.com", "root-password-22")


def add_user(env, email, password, *extra):
    return cz("--add-user", email, "--password-stdin", *extra, env=env, input=password + "\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A running app with two accounts; yields (base_url, env)."""
    root = tmp_path_factory.mktemp("usersapp")
    home = tmp_path_factory.mktemp("czhome")
    appdir = root / "usersapp"
    appdir.mkdir()
    (appdir / "app.yaml").write_text(APP_YAML)
    (appdir / "main.py").write_text(MAIN_PY)
    (appdir / "staff.txt").write_text("for administrators\n")
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    add_user(env, "Alice@Example.com", ALICE[1])
    add_user(env, ROOT[0], ROOT[1], "--admin")
    port = free_port()
    cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=env)
    yield f"http://127.0.0.1:{port}", env
    cz("--stop", "application", "--port", str(port), env=env, check=False)
    assert_clean_logs(str(home))


def sign_in(s, base, email, password, follow="/private"):
    """Walks the real form: protected page -> redirect -> form -> POST."""
    r = s.get(base + follow)
    assert r.status_code == 200 and r.url.startswith(base + "/_ah/login?continue=")
    m = re.search(r'name="continue" value="([^"]*)"', r.text)
    assert m, r.text
    assert 'name="password"' in r.text
    return s.post(base + "/_ah/login", data={"email": email, "password": password, "continue": m.group(1)})


def test_accounts_cli(site):
    base, env = site
    out = cz("--list-users", env=env).stdout
    assert re.search(r"^alice@example\.com\s+no\s+\d{21}$", out, re.M), out
    assert re.search(r"^root@example\.com\s+yes\s+\d{21}$", out, re.M), out
    home = env["CYCLOZZO_HOME"]
    assert os.stat(os.path.join(home, "users", "accounts")).st_mode & 0o777 == 0o600
    assert os.stat(os.path.join(home, "secrets", "users.key")).st_mode & 0o777 == 0o600
    text = open(os.path.join(home, "users", "accounts")).read()
    assert ALICE[1] not in text and "scrypt$" in text
    p = cz("--add-user", "bob@example.com", "--password-stdin", env=env, input="short\n", check=False)
    assert p.returncode != 0 and "shorter than 8" in p.stderr
    p = cz("--add-user", "not-an-email", "--password-stdin", env=env, input="long-enough-1\n", check=False)
    assert p.returncode != 0 and "email" in p.stderr
    p = cz("--add-user", "bob@example.com", env=env, check=False, stdin=open(os.devnull), start_new_session=True)
    assert p.returncode != 0 and "--password-stdin" in p.stderr
    p = cz("--remove-user", "nobody@example.com", env=env, check=False)
    assert p.returncode != 0 and "no account" in p.stderr


def test_login_required_flow_admin_and_logout(site):
    base, env = site
    s = requests.Session()
    r = s.get(base + "/private", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].startswith("/_ah/login?continue=")
    r = sign_in(s, base, "ALICE@example.com", ALICE[1])
    assert r.status_code == 200 and r.url == base + "/private"
    assert [h.status_code for h in r.history] == [302]
    cookie = r.history[0].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    seen = r.json()
    assert seen["USER_EMAIL"] == "alice@example.com"
    assert re.fullmatch(r"\d{21}", seen["USER_ID"])
    assert seen["USER_IS_ADMIN"] == "0"
    assert seen["USER_NICKNAME"] == "alice@example.com"
    assert seen["AUTH_DOMAIN"] == "gmail.com"
    assert "cyclozzo_session" not in seen["cookie"]      # the app never sees the session
    listed = cz("--list-users", env=env).stdout
    assert re.search(r"^alice@example\.com\s+no\s+%s$" % seen["USER_ID"], listed, re.M)

    # The same user on an optional page; the id is stable across requests.
    assert s.get(base + "/anything").json()["USER_ID"] == seen["USER_ID"]

    # A signed-in non-administrator is refused an admin page, clearly.
    r = s.get(base + "/admin/panel", allow_redirects=False)
    assert r.status_code == 403
    assert "alice@example.com" in r.text and "not an administrator" in r.text
    assert "/_ah/logout?continue=" in r.text
    assert s.get(base + "/staff.txt", allow_redirects=False).status_code == 403    # static handlers too

    # Sign out: the cookie is cleared and protected pages redirect again.
    r = s.get(base + "/_ah/logout?continue=/bye", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/bye"
    assert "Max-Age=0" in r.headers["Set-Cookie"]
    s.cookies.clear()
    s.cookies.update(requests.utils.cookiejar_from_dict({}))
    r = s.get(base + "/private", allow_redirects=False)
    assert r.status_code == 302
    assert s.get(base + "/anything").json()["USER_EMAIL"] is None

    # An administrator gets in.
    a = requests.Session()
    r = sign_in(a, base, ROOT[0], ROOT[1], follow="/admin/panel")
    assert r.status_code == 200 and r.url == base + "/admin/panel"
    seen_root = r.json()
    assert seen_root["USER_IS_ADMIN"] == "1" and seen_root["USER_EMAIL"] == ROOT[0]
    assert seen_root["USER_ID"] != seen["USER_ID"]
    r = a.get(base + "/staff.txt")
    assert r.status_code == 200 and r.text == "for administrators\n"
    assert requests.get(base + "/staff.txt", allow_redirects=False).status_code == 302


def test_logout_clears_browser_cookie(site):
    base, _ = site
    s = requests.Session()
    sign_in(s, base, ALICE[0], ALICE[1])
    assert s.get(base + "/private", allow_redirects=False).status_code == 200
    r = s.get(base + "/_ah/logout?continue=%2Fprivate")   # the jar drops the cleared cookie
    assert r.url.startswith(base + "/_ah/login?continue=")
    assert s.get(base + "/private", allow_redirects=False).status_code == 302


def test_wrong_password_and_unknown_user(site):
    base, _ = site
    for email, pw in ((ALICE[0], "not-the-password"), ("carol@example.com", ALICE[1])):
        r = requests.post(base + "/_ah/login", data={"email": email, "password": pw, "continue": "/private"},
                          allow_redirects=False)
        assert r.status_code == 401
        assert r.text.count("The email address or password is incorrect.") == 1
        assert 'name="continue" value="/private"' in r.text
        assert "Set-Cookie" not in r.headers
    r = requests.get(base + "/api/data", allow_redirects=False)
    assert r.status_code == 401     # auth_fail_action: unauthorized


def test_forged_or_altered_cookies_and_headers_ignored(site):
    base, _ = site
    s = requests.Session()
    sign_in(s, base, ALICE[0], ALICE[1])
    good = s.cookies.get("cyclozzo_session")
    email, admin, expires, stamp, mac = good[len("v1:"):].split(":")
    assert (email, admin) == (ALICE[0], "0")
    forgeries = [
        "v1:%s:1:%s:%s:%s" % (email, expires, stamp, mac),                 # admin flag flipped
        "v1:%s:0:%d:%s:%s" % (email, int(expires) + 1000, stamp, mac),     # expiry extended
        "v1:%s:0:%s:%s:%s" % (ROOT[0], expires, stamp, mac),               # someone else
        "v1:%s:1:9999999999:dev:%s" % (ROOT[0], "0" * 64),                 # made up
        "v1:%s:0:1000:%s:%s" % (email, stamp, mac),                        # long expired
        good[:-1] + ("0" if good[-1] != "0" else "1"),
    ]
    for bad in forgeries:
        r = requests.get(base + "/admin/panel", cookies={"cyclozzo_session": bad}, allow_redirects=False)
        assert r.status_code == 302, bad
        r = requests.get(base + "/anything", cookies={"cyclozzo_session": bad})
        assert r.json()["USER_EMAIL"] is None, bad
    # Headers a client sends cannot sign anyone in.
    r = requests.get(base + "/anything", headers={"X-AppEngine-User-Email": ROOT[0], "X-AppEngine-User-Is-Admin": "1",
                                                  "X-AppEngine-User-Id": "1" * 21})
    seen = r.json()
    assert seen["USER_EMAIL"] is None and seen["USER_IS_ADMIN"] in (None, "0")
    r = requests.get(base + "/admin/panel", headers={"X-AppEngine-User-Email": ROOT[0],
                                                     "X-AppEngine-User-Is-Admin": "1"}, allow_redirects=False)
    assert r.status_code == 302
    # The genuine cookie still works.
    assert requests.get(base + "/private", cookies={"cyclozzo_session": good}).json()["USER_EMAIL"] == ALICE[0]


@pytest.mark.parametrize("target,expect", [
    ("http://evil.example/steal", "/"),
    ("//evil.example/steal", "/"),
    ("/\\evil.example", "/"),
    ("https://127.0.0.1.evil.example/", "/"),
    ("javascript:alert(1)", "/"),
    ("/private?x=1", "/private?x=1"),
    ("/next?a=b&c=d e#frag", "/next?a=b&c=d%20e#frag"),
    ("/caf\u00e9", "/caf%C3%A9"),
    ("HOST/ok", "HOST/ok"),
])
def test_no_open_redirect(site, target, expect):
    base, _ = site
    host = base[len("http://"):]
    target = target.replace("HOST", base)
    expect = expect.replace("HOST", base)
    r = requests.post(base + "/_ah/login", data={"email": ALICE[0], "password": ALICE[1], "continue": target},
                      allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == expect
    r = requests.get(base + "/_ah/logout?continue=" + urllib.parse.quote(target, safe=""), allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == expect
    assert host


def test_cross_site_post_refused(site):
    base, _ = site
    r = requests.post(base + "/_ah/login", data={"email": ALICE[0], "password": ALICE[1]},
                      headers={"Origin": "http://evil.example"}, allow_redirects=False)
    assert r.status_code == 403 and "Set-Cookie" not in r.headers


def test_removing_or_changing_an_account_ends_its_sessions(site):
    base, env = site
    add_user(env, "temp@example.com", "temp-password-1", "--admin")
    s = requests.Session()
    assert sign_in(s, base, "temp@example.com", "temp-password-1", follow="/admin/p").status_code == 200
    add_user(env, "temp@example.com", "temp-password-2", "--admin")      # new password
    assert s.get(base + "/admin/p", allow_redirects=False).status_code == 302
    assert sign_in(s, base, "temp@example.com", "temp-password-2", follow="/admin/p").status_code == 200
    cz("--remove-user", "temp@example.com", env=env)
    assert s.get(base + "/admin/p", allow_redirects=False).status_code == 302
    r = s.post(base + "/_ah/login", data={"email": "temp@example.com", "password": "temp-password-2"},
               allow_redirects=False)
    assert r.status_code == 401


def test_repeated_failures_lock_the_account_briefly(site, tmp_path):
    base, env = site
    add_user(env, "mallory-target@example.com", "target-password-1")
    codes = []
    for _ in range(6):
        r = requests.post(base + "/_ah/login", data={"email": "mallory-target@example.com", "password": "guess-guess"},
                          allow_redirects=False)
        codes.append(r.status_code)
    assert codes[:5] == [401] * 5 and codes[5] == 429
    r = requests.post(base + "/_ah/login", data={"email": "mallory-target@example.com", "password": "target-password-1"},
                      allow_redirects=False)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in r.text


def test_login_form_body_limits(site):
    base, _ = site
    r = requests.post(base + "/_ah/login", data="x" * (70 * 1024),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, allow_redirects=False)
    assert r.status_code == 413
    r = requests.put(base + "/_ah/login", data="a", allow_redirects=False)
    assert r.status_code == 405


@pytest.fixture
def dev_site(tmp_path, cz_env):
    appdir = tmp_path / "devapp"
    appdir.mkdir()
    (appdir / "app.yaml").write_text(APP_YAML)
    (appdir / "main.py").write_text(MAIN_PY)
    port = free_port()
    cz("--start", "application", "--dir", str(appdir), "--port", str(port), "--dev", env=cz_env)
    yield f"http://127.0.0.1:{port}"
    cz("--stop", "application", "--port", str(port), env=cz_env, check=False)


def test_dev_mode_any_email_and_admin_checkbox(dev_site):
    base = dev_site
    s = requests.Session()
    r = s.get(base + "/admin/x")
    assert r.status_code == 200 and "Sign in as administrator" in r.text and 'name="password"' not in r.text
    cont = re.search(r'name="continue" value="([^"]*)"', r.text).group(1)
    r = s.post(base + "/_ah/login", data={"email": "Dev@Example.org", "admin": "True", "continue": cont})
    assert r.status_code == 200 and r.url == base + "/admin/x"
    assert r.json()["USER_EMAIL"] == "dev@example.org" and r.json()["USER_IS_ADMIN"] == "1"
    u = requests.Session()
    r = u.post(base + "/_ah/login", data={"email": "joe@gmail.com", "continue": "/private"})
    assert r.json()["USER_IS_ADMIN"] == "0" and r.json()["USER_NICKNAME"] == "joe"
    assert u.get(base + "/admin/x", allow_redirects=False).status_code == 403


def test_dev_flag_only_with_start(cz_env):
    p = cz("--list-users", "--dev", env=cz_env, check=False)
    assert p.returncode == 2 and "--dev" in p.stderr


SDK_MAIN = """\
from google.appengine.api import users, wrap_wsgi_app

def _app(environ, start_response):
    if environ["PATH_INFO"] == "/urls":
        body = users.create_login_url("/admin/x") + " " + users.create_logout_url("/")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]
    user = users.get_current_user()
    if user is None:
        body = "anonymous"
    else:
        body = "%s|%s|%s|%s" % (user.email(), user.user_id(), user.nickname(), users.is_current_user_admin())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]

app = wrap_wsgi_app(_app)
"""


def test_sdk_users_api_sees_the_user(tmp_path, cz_env):
    """Google's SDK (users.get_current_user / is_current_user_admin) in an app."""
    appdir = tmp_path / "sdkapp"
    appdir.mkdir()
    (appdir / "app.yaml").write_text("runtime: python311\napp_engine_apis: true\n" + APP_YAML.split("\n", 1)[1])
    (appdir / "main.py").write_text(SDK_MAIN)
    (appdir / "requirements.txt").write_text("appengine-python-standard==3.1.0\n")
    add_user(cz_env, ROOT[0], ROOT[1], "--admin")
    port = free_port()
    cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=cz_env, timeout=600)
    try:
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/").text == "anonymous"
        s = requests.Session()
        r = sign_in(s, base, ROOT[0], ROOT[1], follow="/admin/x")
        email, uid, nick, admin = r.text.split("|")
        assert (email, nick, admin) == (ROOT[0], ROOT[0], "True") and re.fullmatch(r"\d{21}", uid)
        assert requests.get(base + "/").text == "anonymous"
        # The users API's own URLs lead through the same pages.
        login_url, logout_url = requests.get(base + "/urls").text.split(" ")
        t = requests.Session()
        r = t.get(base + login_url)
        assert r.status_code == 200 and 'name="password"' in r.text
        cont = re.search(r'name="continue" value="([^"]*)"', r.text).group(1)
        r = t.post(base + "/_ah/login", data={"email": ROOT[0], "password": ROOT[1], "continue": cont})
        assert r.url == base + "/admin/x" and r.text.split("|")[1] == uid
        r = t.get(base + logout_url)
        assert r.url == base + "/" and r.text == "anonymous"
    finally:
        cz("--stop", "application", "--port", str(port), env=cz_env, check=False)
