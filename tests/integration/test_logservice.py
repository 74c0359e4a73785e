"""The request log end to end: the router's records and the app's Python
logging lines of each request, read back through the logservice RPC from a
real app (Read with every filter and offsets, Flush and incomplete
requests), with `cyclozzo --logs` and --follow, across a restart, and
pruned by age and size."""
import os
import subprocess
import threading
import time

import pytest
import requests

from conftest import BIN
from identapp_fixture import IdentApp


@pytest.fixture(scope="module")
def ia(tmp_path_factory):
    a = IdentApp(tmp_path_factory)
    yield a
    a.close()


def hit(ia, tag, **params):
    r = requests.get(ia.base + "/log", params=dict(tag=tag, **params), timeout=30,
                     headers={"User-Agent": "cz-test/1.0", "Referer": "http://ref.example/"})
    assert r.status_code == 200
    return r.json()["rid"]


def read(ia, **params):
    d = ia.get("/read", **{k: str(v) for k, v in params.items()})
    assert "error" not in d, d
    return d


def ours(d, rids):
    return [l for l in d["logs"] if l["request_id"] in rids]


def wait_lines(ia, rid, n):
    def got():
        d = read(ia, request_ids=rid, include_app_logs=1)
        return d["logs"] if d["logs"] and len(d["logs"][0]["lines"]) >= n else None
    return ia.wait(got, f"{n} app lines of {rid}")[0]


def test_request_record_and_app_lines(ia):
    rid = hit(ia, "alpha", error=1, critical=1)
    rec = wait_lines(ia, rid, 5)
    assert rec["method"] == "GET" and rec["status"] == 200 and rec["finished"]
    assert rec["resource"] == "/log?tag=alpha&error=1&critical=1"
    assert rec["ip"] == "127.0.0.1" and rec["http_version"] == "HTTP/1.1"
    assert rec["user_agent"] == "cz-test/1.0" and rec["referrer"] == "http://ref.example/"
    assert rec["host"] == f"127.0.0.1:{ia.port}"
    assert rec["module_id"] == "backendsvc" and rec["version_id"] == "v7"
    assert rec["app_id"].endswith("~" + os.path.basename(ia.dir))
    assert rec["response_size"] > 0 and rec["latency"] > 0
    assert rec["start_time"] <= rec["end_time"] and abs(rec["end_time"] / 1e6 - time.time()) < 60
    assert '"GET /log?tag=alpha' in rec["combined"]
    msgs = [(l["level"], l["message"]) for l in rec["lines"]]
    # debug is below the runtime's logging level; print() is an info line
    assert msgs == [(1, "info alpha"), (2, "warning alpha"), (3, "error alpha"), (4, "critical alpha"),
                    (1, "printed alpha")]
    times = [l["time"] for l in rec["lines"]]
    assert times == sorted(times) and rec["start_time"] <= times[0] <= rec["end_time"] + 1000000
    # without include_app_logs: no lines
    assert read(ia, request_ids=rid)["logs"][0]["lines"] == []


def test_filters(ia):
    t0 = int(time.time() * 1e6)
    r_warn = hit(ia, "f1")
    r_err = hit(ia, "f2", error=1)
    time.sleep(0.05)
    t1 = int(time.time() * 1e6)
    r_late = hit(ia, "f3")
    wait_lines(ia, r_late, 3)
    wait_lines(ia, r_err, 4)
    rids = {r_warn, r_err, r_late}

    got = ours(read(ia, count=100, start_time=t0), rids)
    assert [l["request_id"] for l in got] == [r_late, r_err, r_warn]      # newest first
    got = ours(read(ia, count=100, start_time=t0, end_time=t1), rids)
    assert [l["request_id"] for l in got] == [r_err, r_warn]
    got = ours(read(ia, count=100, start_time=t1), rids)
    assert [l["request_id"] for l in got] == [r_late]
    got = ours(read(ia, count=100, start_time=t0, minimum_log_level=3), rids)
    assert [l["request_id"] for l in got] == [r_err]
    got = ours(read(ia, count=100, start_time=t0, minimum_log_level=2), rids)
    assert len(got) == 3
    assert len(ours(read(ia, count=100, start_time=t0, version_ids="v7"), rids)) == 3
    assert len(ours(read(ia, count=100, start_time=t0, version_ids="backendsvc:v7"), rids)) == 3
    assert ours(read(ia, count=100, start_time=t0, version_ids="v8"), rids) == []
    got = read(ia, request_ids=r_err + "," + r_warn)["logs"]
    assert [l["request_id"] for l in got] == [r_err, r_warn]
    assert read(ia, request_ids="0123456789abcdef")["logs"] == []
    d = ia.get("/read", other_app="1")
    assert d["error"] == 1                                            # INVALID_REQUEST


def test_batches_and_offsets(ia):
    t0 = int(time.time() * 1e6)
    rids = [hit(ia, f"p{i}") for i in range(7)]
    wait_lines(ia, rids[-1], 2)
    t1 = int(time.time() * 1e6)     # the reads below are logged too: keep them out
    full = [l["request_id"] for l in read(ia, count=100, start_time=t0, end_time=t1)["logs"]]
    paged, offset, calls = [], None, 0
    while True:
        params = dict(count=2, start_time=t0, end_time=t1)
        if offset:
            params["offset"] = offset
        d = read(ia, **params)
        calls += 1
        assert len(d["logs"]) <= 2
        paged += [l["request_id"] for l in d["logs"]]
        offset = d.get("offset")
        if not offset:
            break
    assert paged == full and calls >= 4
    assert [r for r in paged if r in rids] == rids[::-1]
    # an offset taken from a record resumes right after it
    third = read(ia, count=100, start_time=t0, end_time=t1)["logs"][2]
    after = read(ia, count=100, start_time=t0, end_time=t1, offset=third["offset"])["logs"]
    assert [l["request_id"] for l in after] == full[3:]
    d = ia.get("/read", offset="AAEC")
    assert d["error"] == 1


def test_flush_and_incomplete(ia):
    d = ia.get("/flushread")
    mine = d["with_incomplete"]["logs"]
    assert len(mine) == 1 and mine[0]["request_id"] == d["rid"] and not mine[0]["finished"]
    assert [l["message"] for l in mine[0]["lines"]] == ["flushed early"]
    assert d["without"]["logs"] == []
    # once done it is an ordinary finished record, early line kept
    rec = wait_lines(ia, d["rid"], 1)
    assert rec["finished"] and rec["status"] == 200 and rec["lines"][0]["message"] == "flushed early"


def test_not_found_and_cli(ia):
    r = requests.get(ia.base + "/nope-" + str(time.time()), timeout=30)
    assert r.status_code == 404
    rid = hit(ia, "clitag", error=1)
    wait_lines(ia, rid, 4)
    out = ia.cz("--logs", os.path.basename(ia.dir), "--count", "50").stdout
    lines = out.splitlines()
    i = next(i for i, l in enumerate(lines) if f"rid={rid}" in l)
    assert " 127.0.0.1 GET /log?tag=clitag&error=1 200 " in lines[i] and '"cz-test/1.0"' in lines[i]
    assert lines[i + 1].strip().endswith("info clitag") and lines[i + 1].startswith("    I ")
    assert lines[i + 3].startswith("    E ") and lines[i + 3].endswith("error clitag")
    assert any(" GET /nope-" in l and " 404 " in l for l in lines)
    p = ia.cz("--logs", "no-such-app", check=False)
    assert p.returncode == 1 and "no-such-app" in p.stderr


def test_follow_sees_new_request(ia):
    p = subprocess.Popen([os.path.join(BIN, "cyclozzo"), "--logs", os.path.basename(ia.dir), "--follow"],
                         env=ia.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        time.sleep(1.0)
        rid = hit(ia, "followme")

        def seen():
            text = "".join(lines)
            return rid in text and "info followme" in text.split(f"rid={rid}", 1)[1]
        ia.wait(seen, "--follow to print the new request with its lines")
        assert p.poll() is None                                   # still following
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_logs_survive_restart(ia):
    rid = hit(ia, "durable", error=1)
    wait_lines(ia, rid, 4)
    ia.stop()
    out = ia.cz("--logs", os.path.basename(ia.dir), "--count", "1000").stdout
    assert f"rid={rid}" in out                                    # readable with the daemon stopped
    ia.start()
    rec = read(ia, request_ids=rid, include_app_logs=1)["logs"][0]
    assert rec["status"] == 200 and [l["message"] for l in rec["lines"]][2] == "error durable"


def test_retention_by_age_and_size(ia, tmp_path_factory):
    a = IdentApp(tmp_path_factory, extra_env={"CYCLOZZO_LOG_MAX_AGE": "3", "CYCLOZZO_LOG_MAX_MB": "1"},
                 home=ia.home)
    try:
        old = hit(a, "old")
        wait_lines(a, old, 2)
        a.wait(lambda: read(a, request_ids=old)["logs"] == [], "the old record to be pruned by age", timeout=15)
        # size: each request logs ~160 KB; 1 MB holds only the newest few
        big = [hit(a, f"big{i}", big=10) for i in range(14)]
        wait_lines(a, big[-1], 12)
        def pruned():
            d = read(a, count=100, include_app_logs=1)
            kept = [l["request_id"] for l in d["logs"]]
            return kept if big[0] not in kept and big[-1] in kept else None
        kept = a.wait(pruned, "the oldest big records to be pruned by size", timeout=15)
        assert 1 <= len([r for r in kept if r in big]) < 14
        store = os.path.join(a.home, "applogs", os.path.basename(a.dir), "data.mdb")
        assert os.path.getsize(store) < 4 << 20
    finally:
        a.stop()
