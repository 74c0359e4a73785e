"""Helpers for tests that drive bin/cz-apiserver with Google's Python SDK.

ApiServer starts the real binary on a free port with its own CYCLOZZO_HOME
and mints tickets with `cz-apiserver --mint-ticket`. use_ticket() points the
SDK's default API stub (the one App Engine apps use in production) at it:
API_HOST/API_PORT and the ticket in the environment, as the runtime sets them.
"""
import os
import subprocess
import time

from conftest import BIN, assert_clean_logs


class ApiServer:
    def __init__(self, home, extra_env=None, args=()):
        self.home = home
        env = dict(os.environ)
        env.update(extra_env or {})
        os.makedirs(os.path.join(home, "logs"), exist_ok=True)
        self.log = os.path.join(home, "logs", "cz-apiserver.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [os.path.join(BIN, "cz-apiserver"), "--home", home, "--port", "0",
                 "--log-level", "warn", *args],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("port="):
            self.stop()
            with open(self.log, errors="replace") as f:
                raise RuntimeError("cz-apiserver did not start: %r %s" % (line, f.read()))
        self.port = int(line.strip().split("=", 1)[1])

    def mint(self, app, *args):
        out = subprocess.run(
            [os.path.join(BIN, "cz-apiserver"), "--home", self.home, "--mint-ticket", app, *args],
            capture_output=True, text=True, check=True, timeout=30)
        return out.stdout.strip()

    def stop(self):
        """Stop the server; fail on any sanitizer report in its log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        assert_clean_logs(self.home)


_saved = None     # (os.environ, stub map) as they were before use_ticket


def use_ticket(server, ticket):
    """Route the SDK's API calls in this process to server with ticket.
    restore() undoes it (the fixtures call it on teardown)."""
    global _saved
    from google.appengine.api import apiproxy_stub_map
    from google.appengine.runtime import default_api_stub
    if _saved is None:
        _saved = (dict(os.environ), apiproxy_stub_map.apiproxy)
        apiproxy_stub_map.apiproxy = apiproxy_stub_map.APIProxyStubMap()
        default_api_stub.Register(default_api_stub.DefaultApiStub())
    os.environ["API_HOST"] = "127.0.0.1"
    os.environ["API_PORT"] = str(server.port)
    os.environ[default_api_stub.TICKET_HEADER] = ticket
    default_api_stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(True)


def restore():
    """Put the environment and the SDK's stub map back as they were."""
    global _saved
    if _saved is None:
        return
    from google.appengine.api import apiproxy_stub_map
    from google.appengine.runtime import default_api_stub
    env, stubmap = _saved
    os.environ.clear()          # the SDK keeps request state (namespace, OAuth) here too
    os.environ.update(env)
    apiproxy_stub_map.apiproxy = stubmap
    default_api_stub.DefaultApiStub.SetUseRequestSecurityTicketForThread(False)
    _saved = None


def raw_call(service, method, request, response):
    """One synchronous call through the SDK's stub; raises its errors."""
    from google.appengine.api import apiproxy_stub_map
    apiproxy_stub_map.MakeSyncCall(service, method, request, response)
    return response


def wait_until(t):
    """Sleep until the wall clock passes t (unix seconds)."""
    while time.time() < t:
        time.sleep(min(0.1, max(0.0, t - time.time())))
