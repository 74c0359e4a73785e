"""The users service through Google's SDK (google.appengine.api.users and
oauth) against bin/cz-apiserver: login/logout URLs point at the router's
/_ah/login and /_ah/logout pages with the destination escaped as App Engine's
development server escapes it, and there is never an OAuth user."""
import urllib.parse

import pytest

from apiserver_sdk import ApiServer, raw_call, restore, use_ticket

from google.appengine.api import user_service_pb2 as pb
from google.appengine.api import oauth, users
from google.appengine.runtime import apiproxy_errors


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    s = ApiServer(str(home))
    use_ticket(s, s.mint("dev~usersapp"))
    yield s
    restore()
    s.stop()


def continue_of(url, page):
    path, _, query = url.partition("?")
    assert path == page
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    assert list(params) == ["continue"]
    return params["continue"][0]


def test_login_url(server):
    assert users.create_login_url("/next") == "/_ah/login?continue=/next"
    url = users.create_login_url("/next?a=b&c=d e#frag")
    assert url == "/_ah/login?continue=/next%3Fa%3Db%26c%3Dd%20e%23frag"
    assert continue_of(url, "/_ah/login") == "/next?a=b&c=d e#frag"
    url = users.create_login_url("http://example.com:8080/x/y?q=1")
    assert url == "/_ah/login?continue=http%3A//example.com%3A8080/x/y%3Fq%3D1"
    assert continue_of(url, "/_ah/login") == "http://example.com:8080/x/y?q=1"
    assert users.create_login_url() == "/_ah/login?continue=/"
    assert users.create_login_url("?x=1") == "/_ah/login?continue=/%3Fx%3D1"
    assert users.create_login_url("?next=http://h/") == "/_ah/login?continue=/%3Fnext%3Dhttp%3A//h/"
    assert continue_of(users.create_login_url("/caf\u00e9"), "/_ah/login") == "/caf\u00e9"
    with pytest.raises(users.NotAllowedError):
        users.create_login_url("/", federated_identity="https://openid.example")


def test_logout_url(server):
    assert users.create_logout_url("/") == "/_ah/logout?continue=/"
    url = users.create_logout_url("https://app.example.org/bye?who=me")
    assert url == "/_ah/logout?continue=https%3A//app.example.org/bye%3Fwho%3Dme"
    assert continue_of(url, "/_ah/logout") == "https://app.example.org/bye?who=me"
    assert users.create_logout_url("") == "/_ah/logout?continue=/"


def test_too_long_destination(server):
    with pytest.raises(users.RedirectTooLongError):
        users.create_login_url("/" + "x" * 5000)
    with pytest.raises(users.RedirectTooLongError):
        users.create_logout_url("/" + "x" * 5000)


def test_federated_identity_refused_on_the_wire(server):
    req = pb.CreateLoginURLRequest(destination_url="/", federated_identity="https://openid.example")
    with pytest.raises(apiproxy_errors.ApplicationError) as e:
        raw_call("user", "CreateLoginURL", req, pb.CreateLoginURLResponse())
    assert e.value.application_error == pb.UserServiceError.NOT_ALLOWED


def test_no_oauth_user(server):
    with pytest.raises(oauth.InvalidOAuthParametersError):
        oauth.get_current_user("https://www.googleapis.com/auth/userinfo.email")
    with pytest.raises(apiproxy_errors.ApplicationError) as e:
        raw_call("user", "GetOAuthUser", pb.GetOAuthUserRequest(scopes=["s"]), pb.GetOAuthUserResponse())
    assert e.value.application_error == pb.UserServiceError.OAUTH_INVALID_REQUEST
