"""app_identity through Google's SDK in a real app on a real daemon: the
service account and bucket names, signatures that verify with the published
X.509 certificate (checked with `cryptography`), a key kept private under
CYCLOZZO_HOME/secrets and stable across restarts, access tokens from the
SDK's metadata-server path that `cyclozzo --verify-token` accepts, and
altered or foreign tokens it refuses."""
import base64
import os
import stat
import time

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from identapp_fixture import IdentApp

APP = "identapp"


@pytest.fixture(scope="module")
def ia(tmp_path_factory):
    a = IdentApp(tmp_path_factory)
    yield a
    a.close()


def verify(pem, data, sig_b64):
    cert = x509.load_pem_x509_certificate(pem.encode())
    cert.public_key().verify(base64.b64decode(sig_b64), data, padding.PKCS1v15(), hashes.SHA256())
    return cert


def test_names(ia):
    d = ia.get("/identity")
    assert d["app_id"] == os.path.basename(ia.dir)
    app = d["app_id"]
    assert d["service_account"] == f"{app}@appspot.gserviceaccount.com"
    assert d["bucket"] == f"{app}.appspot.com"
    assert d["hostname"] == f"127.0.0.1:{ia.port}"


def test_signature_verifies_with_certificate(ia):
    d = ia.get("/identity", data="sign me, please")
    assert len(d["certs"]) == 1
    c = d["certs"][0]
    assert c["key_name"] == d["key_name"] and len(d["key_name"]) == 40
    cert = verify(c["pem"], b"sign me, please", d["signature"])
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == d["service_account"]
    # the same signature does not verify other bytes
    with pytest.raises(InvalidSignature):
        verify(c["pem"], b"sign me, please!", d["signature"])
    # SDK-side errors for what cannot be signed
    assert d["big_blob"]["error"] == "BlobSizeTooLarge"
    assert d["empty_scopes"]["error"] == "InvalidScope"


def test_key_is_private_and_survives_restart(ia):
    before = ia.get("/identity", data="x")
    path = os.path.join(ia.home, "secrets", f"app-identity-{before['app_id']}.pem")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    with open(path) as f:
        text = f.read()
    assert "PRIVATE KEY" in text and "BEGIN CERTIFICATE" in text
    ia.stop()
    ia.start()
    after = ia.get("/identity", data="x")
    assert after["key_name"] == before["key_name"]
    assert after["certs"][0]["pem"] == before["certs"][0]["pem"]
    verify(after["certs"][0]["pem"], b"x", before["signature"])


def test_access_token_verified_by_platform(ia):
    scopes = "https://www.googleapis.com/auth/cloud-platform,https://www.googleapis.com/auth/userinfo.email"
    d = ia.get("/identity", scopes=scopes)
    assert "token_error" not in d, d
    tok = d["token"]
    assert 3000 < d["expires"] - time.time() <= 3600
    out = ia.cz("--verify-token", tok).stdout
    assert f"app: {d['app_id']}" in out
    assert "scopes: " + scopes.replace(",", " ") in out
    assert str(int(d["expires"]))[:6] in out

    # altered payload (another scope) or signature: refused with a sentence
    head, payload, sig = tok.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).replace(b"cloud-platform", b"cloud-platforX")
    forged = ".".join([head, base64.urlsafe_b64encode(raw).decode().rstrip("="), sig])
    p = ia.cz("--verify-token", forged, check=False)
    assert p.returncode == 1 and "signature does not match" in p.stderr
    bad_sig = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    p = ia.cz("--verify-token", bad_sig, check=False)
    assert p.returncode == 1 and "invalid token" in p.stderr
    p = ia.cz("--verify-token", "not-a-token", check=False)
    assert p.returncode == 1 and "not a Cyclozzo access token" in p.stderr


def test_foreign_key_refuses_token(ia, tmp_path):
    """The same token checked against another installation's keys fails."""
    d = ia.get("/identity", scopes="s1")
    env = dict(ia.env, CYCLOZZO_HOME=str(tmp_path))
    from conftest import cz
    p = cz("--verify-token", d["token"], env=env, check=False)
    assert p.returncode == 1 and "has no key" in p.stderr
