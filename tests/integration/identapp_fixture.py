"""Starts tests/integration/apps/identapp on a real daemon for
test_app_identity.py, test_modules.py and test_logservice.py (one
CYCLOZZO_HOME, and so one virtualenv, per test module)."""
import os
import shutil
import time

import requests

from conftest import ROOT, assert_clean_logs, cz, free_port

APP = os.path.join(ROOT, "tests", "integration", "apps", "identapp")


class IdentApp:
    def __init__(self, tmp_path_factory, extra_env=None, home=None):
        self.home = home or str(tmp_path_factory.mktemp("identhome"))
        self.env = dict(os.environ, CYCLOZZO_HOME=self.home, **(extra_env or {}))
        self.dir = str(tmp_path_factory.mktemp("identapp"))
        shutil.copytree(APP, self.dir, dirs_exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self):
        cz("--start", "application", "--dir", self.dir, "--port", str(self.port), env=self.env, timeout=600)

    def stop(self):
        cz("--stop", "application", "--port", str(self.port), env=self.env, check=False)

    def close(self):
        self.stop()
        assert_clean_logs(self.home)

    def get(self, path, **params):
        r = requests.get(self.base + path, params=params, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def cz(self, *args, **kw):
        return cz(*args, env=self.env, **kw)

    def wait(self, fn, what, timeout=15):
        end = time.time() + timeout
        while True:
            v = fn()
            if v:
                return v
            if time.time() > end:
                raise AssertionError(f"timed out waiting for {what}; last: {v!r}")
            time.sleep(0.2)
