"""The Blobstore end to end: an app using Google's SDK
(google.appengine.ext.blobstore) on `cyclozzo --start application` with
--blob-dir, uploading through create_upload_url to the router's
/_ah/upload/SESSION, reading BlobInfo and fetch_data, serving with send_blob,
deleting; limits, malformed bodies, a 200 MiB upload with flat daemon memory,
and blobs surviving kill -9.

One CYCLOZZO_HOME (and so one cached virtualenv) serves the whole module."""
import hashlib
import os
import shutil
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import ROOT, SANITIZED, assert_clean_logs, cz, free_port

APP = os.path.join(ROOT, "tests", "integration", "apps", "blobapp")


@pytest.fixture(scope="module")
def bs(tmp_path_factory):
    home = tmp_path_factory.mktemp("blobhome")
    blobdir = tmp_path_factory.mktemp("blobs")
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    appdir = tmp_path_factory.mktemp("blobapp")
    shutil.copytree(APP, appdir, dirs_exist_ok=True)
    port = free_port()
    state = {"env": env, "port": port, "base": f"http://127.0.0.1:{port}", "home": str(home), "blobdir": str(blobdir)}

    def start():
        cz("--start", "application", "--dir", str(appdir), "--port", str(port), "--blob-dir", str(blobdir),
           env=env, timeout=600)

    state["start"] = start
    start()
    yield state
    cz("--stop", "application", "--port", str(port), env=env, check=False)
    assert_clean_logs(str(home))


def jget(bs, path, **params):
    r = requests.get(bs["base"] + path, params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def upload_url(bs, **params):
    url = jget(bs, "/url", **params)["url"]
    assert url.startswith(bs["base"] + "/_ah/upload/"), url
    return url


def blob_files(bs):
    out = []
    for d, _, files in os.walk(bs["blobdir"]):
        out += [os.path.join(d, f) for f in files]
    return out


def daemon_pid(bs):
    st = cz("--status", env=bs["env"]).stdout
    return int([l.split()[2] for l in st.splitlines() if l.split()[1:2] == [str(bs["port"])]][0])


def proc_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])


A = b"hello blobstore\n" * 1000                         # 16000 bytes
B = bytes(range(256)) * 40                               # 10240 bytes, binary


def do_upload(bs, **limits):
    files = [("file1", ("a.txt", A, "text/plain")),
             ("uni", ("gr\u00fc\u00dfe \u263a.txt", b"unicode name", "text/plain")),
             ("pics", ("b in.bin", B, "application/x-test")),
             ("pics", ("empty.dat", b"", "application/octet-stream"))]
    data = {"title": "Mr \"Blob\"", "note": "line1\r\nline2"}
    return requests.post(upload_url(bs, **limits), files=files, data=data, timeout=60)


def test_upload_files_and_fields_reach_success_handler(bs):
    r = do_upload(bs)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["query"] == "x=1"
    assert j["fields"] == {"title": ["Mr \"Blob\""], "note": ["line1\r\nline2"], "x": ["1"]}   # x: the query
    byname = {p["filename"]: p for p in j["parsed"]}
    assert set(byname) == {"a.txt", "b in.bin", "empty.dat", "gr\u00fc\u00dfe \u263a.txt"}
    assert jget(bs, "/info", key=byname["gr\u00fc\u00dfe \u263a.txt"]["key"])["filename"] == "gr\u00fc\u00dfe \u263a.txt"
    assert byname["a.txt"]["field"] == "file1" and byname["a.txt"]["size"] == len(A)
    assert byname["a.txt"]["content_type"] == "text/plain"
    assert byname["a.txt"]["md5"] == hashlib.md5(A).hexdigest()
    assert byname["b in.bin"]["field"] == "pics" and byname["b in.bin"]["size"] == len(B)
    assert byname["empty.dat"]["size"] == 0
    assert sorted(j["uploads"]) == sorted(p["key"] for p in j["parsed"])   # get_uploads agrees
    # BlobInfo through the datastore, as the SDK queries it.
    info = jget(bs, "/info", key=byname["a.txt"]["key"])
    assert info["filename"] == "a.txt" and info["size"] == len(A) and info["content_type"] == "text/plain"
    assert info["md5_hash"] == hashlib.md5(A).hexdigest()
    assert abs(time.mktime(time.strptime(info["creation"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.gmtime())) < 120
    keys = jget(bs, "/all")
    assert all(p["key"] in keys for p in j["parsed"])
    named = jget(bs, "/by_name", filename="b in.bin")
    assert [n["key"] for n in named] == [byname["b in.bin"]["key"]]
    assert jget(bs, "/info", key="no-such-blob") is None
    # The session is used up.
    bs["last"] = byname


def test_fetch_data_ranges_and_blob_reader(bs):
    k = bs["last"]["b in.bin"]["key"]
    r = requests.get(bs["base"] + "/fetch", params={"key": k, "start": 10, "end": 19})
    assert r.content == B[10:20]
    r = requests.get(bs["base"] + "/fetch", params={"key": k, "start": 10000, "end": 20000})
    assert r.content == B[10000:]                          # clipped at the end
    r = requests.get(bs["base"] + "/fetch", params={"key": k, "start": 50000, "end": 50010})
    assert r.content == b""
    assert jget(bs, "/fetch", key="nope", start=0, end=5)["error"] == "BlobNotFoundError"
    big = jget(bs, "/fetch", key=k, start=0, end=(1 << 20))
    assert big["error"] == "BlobFetchSizeTooLargeError"
    r = requests.get(bs["base"] + "/reader", params={"key": k, "seek": 300, "n": 5000, "buf": 1000})
    assert r.content == B[300:5300]


def test_send_blob_whole_ranges_and_types(bs):
    k = bs["last"]["a.txt"]["key"]
    base = bs["base"]
    r = requests.get(base + "/serve", params={"key": k})
    assert r.status_code == 200 and r.content == A
    assert r.headers["Content-Type"] == "text/plain"               # from BlobInfo
    assert r.headers["X-App"] == "kept" and "X-AppEngine-BlobKey" not in r.headers
    r = requests.get(base + "/serve", params={"key": k, "ctype": "image/x-mine"})
    assert r.headers["Content-Type"] == "image/x-mine"
    r = requests.get(base + "/serve", params={"key": k}, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == A[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(A)}"
    r = requests.get(base + "/serve", params={"key": k}, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == A[-10:]
    r = requests.get(base + "/serve", params={"key": k, "start": 5, "end": 9})     # X-AppEngine-BlobRange
    assert r.status_code == 206 and r.content == A[5:10]
    r = requests.get(base + "/serve", params={"key": k}, headers={"Range": "bytes=999999-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(A)}"
    r = requests.head(base + "/serve", params={"key": k})
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(A))
    r = requests.get(base + "/serve", params={"key": "no-such-blob"})
    assert r.status_code == 404
    # Keep-alive still works after a blob response.
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(base + "/serve", params={"key": k}).content == A


def test_upload_url_is_single_use_and_unknown_urls_404(bs):
    url = upload_url(bs)
    files = {"f": ("x.txt", b"x", "text/plain")}
    assert requests.post(url, files=files).status_code == 200
    r = requests.post(url, files=files)
    assert r.status_code == 404 and "unknown, expired or already used" in r.text
    r = requests.post(bs["base"] + "/_ah/upload/AAAAAAAAAAAAAAAAAAAA", files=files)
    assert r.status_code == 404
    assert requests.get(url).status_code == 405


def test_max_bytes_refused_and_nothing_kept(bs):
    before_files = len(blob_files(bs))
    before_keys = jget(bs, "/all")
    r = do_upload(bs, max_blob=12000)                  # A is 16000 bytes
    assert r.status_code == 413 and "max_bytes_per_blob" in r.text
    r = do_upload(bs, max_total=20000)                 # A + B + 12 = 26252 bytes
    assert r.status_code == 413 and "max_bytes_total" in r.text
    r = do_upload(bs, max_blob=16000, max_total=26252)  # exactly at the limits (A + B + 12)
    assert r.status_code == 200, r.text
    after = jget(bs, "/all")
    assert len(after) == len(before_keys) + 4
    assert len(blob_files(bs)) == before_files + 4


def test_malformed_multipart_one_clear_400(bs):
    before_files = len(blob_files(bs))
    url = upload_url(bs)
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\n"
            b"some data that never ends")
    r = requests.post(url, data=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 400
    assert "not a well-formed multipart/form-data body" in r.text and "closing delimiter" in r.text
    body = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--\r\n"
    r = requests.post(url, data=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 400 and "Content-Disposition" in r.text
    r = requests.post(url, data=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "multipart/form-data" in r.text
    assert len(blob_files(bs)) == before_files          # the half-written blob is gone
    # The session survives a refused body.
    assert requests.post(url, files={"f": ("ok.txt", b"ok", "text/plain")}).status_code == 200


def test_delete_and_unsupported_storage(bs):
    k = bs["last"]["b in.bin"]["key"]
    assert jget(bs, "/delete", key=k) == "deleted"
    assert jget(bs, "/info", key=k) is None
    assert k not in jget(bs, "/all")
    assert jget(bs, "/fetch", key=k, start=0, end=5)["error"] == "BlobNotFoundError"
    assert requests.get(bs["base"] + "/serve", params={"key": k}).status_code == 404
    assert jget(bs, "/delete", key=k) == "deleted"      # deleting again is fine
    e = jget(bs, "/url", bucket="my-bucket")
    assert e["error"] == "PermissionDeniedError" and "gs_bucket_name" in e["detail"]
    assert jget(bs, "/gskey").startswith("encoded_gs_file:")


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, proc_kb(self.pid, "VmRSS"))
            time.sleep(0.02)


def test_200mib_upload_and_ranged_download_with_flat_memory(bs):
    size = 200 << 20
    chunk = hashlib.sha256(b"seed").digest() * (1 << 15)        # 1 MiB
    pid = daemon_pid(bs)
    rss_before = proc_kb(pid, "VmRSS")
    sampler = RssSampler(pid)
    sampler.start()
    url = upload_url(bs)
    path = url[len(bs["base"]):]
    head = (b"--BIG\r\nContent-Disposition: form-data; name=\"big\"; filename=\"big.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n")
    tail = b"\r\n--BIG\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\nyes\r\n--BIG--\r\n"
    t0 = time.time()
    s = socket.create_connection(("127.0.0.1", bs["port"]), timeout=120)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=BIG\r\n"
              f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n".encode() + head)
    md5 = hashlib.md5()
    for i in range(size // len(chunk)):
        piece = i.to_bytes(4, "big") + chunk[4:]
        md5.update(piece)
        s.sendall(piece)
    s.sendall(tail)
    resp = b""
    while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
        d = s.recv(65536)
        if not d:
            break
        resp += d
    s.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp[:500]
    import json
    j = json.loads(resp.split(b"\r\n\r\n", 1)[1])
    assert j["fields"] == {"after": ["yes"], "x": ["1"]}
    p = j["parsed"][0]
    assert p["size"] == size and p["md5"] == md5.hexdigest()
    key = p["key"]
    t_up = time.time() - t0
    # Ranged download in the middle, then the whole blob streamed and hashed.
    off = 150 << 20
    r = requests.get(bs["base"] + "/serve", params={"key": key}, headers={"Range": f"bytes={off}-{off + 999999}"})
    assert r.status_code == 206 and len(r.content) == 1000000
    i = off // len(chunk)
    assert r.content[:4] == i.to_bytes(4, "big") and r.content[4:1000] == chunk[4:1000]
    got = hashlib.md5()
    n = 0
    t0 = time.time()
    with requests.get(bs["base"] + "/serve", params={"key": key}, stream=True) as r:
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == size
        for part in r.iter_content(1 << 20):
            got.update(part)
            n += len(part)
    assert n == size and got.hexdigest() == md5.hexdigest()
    t_down = time.time() - t0
    sampler.stop = True
    sampler.join()
    rss_after = proc_kb(pid, "VmRSS")
    print(f"daemon RSS KiB: before {rss_before}, peak {sampler.peak}, after {rss_after} "
          f"(200 MiB up in {t_up:.1f}s, down in {t_down:.1f}s)")
    if not SANITIZED:   # ASan's quarantine and shadow memory make absolute figures meaningless
        assert sampler.peak - rss_before < 24 * 1024, (rss_before, sampler.peak)
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
    bs["big"] = (key, md5.hexdigest())
    jget(bs, "/delete", key=key)
    assert jget(bs, "/info", key=key) is None


def test_blobs_and_sessions_survive_kill_9(bs):
    r = do_upload(bs)
    assert r.status_code == 200
    parsed = {p["filename"]: p for p in r.json()["parsed"]}
    pending = upload_url(bs)                            # a session made before the crash
    pid = daemon_pid(bs)
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    cz("--stop", "application", "--port", str(bs["port"]), env=bs["env"], check=False)   # clears the stale state
    bs["start"]()
    k = parsed["a.txt"]["key"]
    assert jget(bs, "/info", key=k)["size"] == len(A)
    assert requests.get(bs["base"] + "/serve", params={"key": k}).content == A
    assert requests.get(bs["base"] + "/fetch", params={"key": k, "start": 0, "end": 15}).content == A[:16]
    r = requests.post(pending, files={"f": ("late.txt", b"after restart", "text/plain")})
    assert r.status_code == 200, r.text
    lk = r.json()["parsed"][0]["key"]
    assert requests.get(bs["base"] + "/serve", params={"key": lk}).content == b"after restart"


def test_chunked_and_expect_continue_uploads(bs):
    body = (b"--C\r\nContent-Disposition: form-data; name=\"f\"; filename=\"c.bin\"\r\n\r\n" + B * 100 +
            b"\r\n--C\r\nContent-Disposition: form-data; name=\"g\"\r\n\r\nfield\r\n--C--\r\n")

    def gen():
        for i in range(0, len(body), 777):
            yield body[i:i + 777]
    r = requests.post(upload_url(bs), data=gen(), headers={"Content-Type": "multipart/form-data; boundary=C"})
    assert r.status_code == 200, r.text
    p = r.json()["parsed"][0]
    assert p["size"] == len(B) * 100 and p["md5"] == hashlib.md5(B * 100).hexdigest()
    assert r.json()["fields"]["g"] == ["field"]
    # Expect: 100-continue (curl's habit for large bodies): the router answers 100 first.
    path = upload_url(bs)[len(bs["base"]):]
    s = socket.create_connection(("127.0.0.1", bs["port"]), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n"
              "Content-Type: multipart/form-data; boundary=C\r\n\r\n".encode())
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(body)
    resp = b""
    while not resp.rstrip().endswith(b"}"):
        d = s.recv(65536)
        if not d:
            break
        resp += d
    s.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
