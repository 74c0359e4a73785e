"""Task queues and cron, end to end: an app using Google's SDK
(google.appengine.api.taskqueue, deferred) on `cyclozzo --start application`,
with push tasks delivered by the scheduler through the router.

One CYCLOZZO_HOME (and so one cached virtualenv) serves the whole module."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import requests

from conftest import ROOT, assert_clean_logs, cz, free_port

APP = os.path.join(ROOT, "tests", "integration", "apps", "tqapp")


@pytest.fixture(scope="module")
def tq(tmp_path_factory):
    home = tmp_path_factory.mktemp("tqhome")
    env = dict(os.environ, CYCLOZZO_HOME=str(home))
    appdir = tmp_path_factory.mktemp("tqapp")
    shutil.copytree(APP, appdir, dirs_exist_ok=True)
    port = free_port()
    state = {"env": env, "port": port, "dir": str(appdir), "base": f"http://127.0.0.1:{port}", "home": str(home)}

    def start():
        cz("--start", "application", "--dir", str(appdir), "--port", str(port), env=env, timeout=600)
        state["started"] = time.time()

    state["start"] = start
    start()
    yield state
    cz("--stop", "application", "--port", str(port), env=env, check=False)
    assert_clean_logs(str(home))


def get(tq, path, **params):
    r = requests.get(tq["base"] + path, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def seen(tq, tag):
    return json.loads(get(tq, "/seen", tag=tag))


def wait_seen(tq, tag, n, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        rows = seen(tq, tag)
        if len(rows) >= n:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"{tag}: saw {seen(tq, tag)} , wanted {n} deliveries")


def test_push_task_delivered_with_headers(tq):
    name = get(tq, "/add", tag="basic", payload="body-1")
    assert name.startswith("task")
    rows = wait_seen(tq, "basic", 1)
    h = rows[0]["headers"]
    assert rows[0]["body"] == "body-1"
    assert h["X-Appengine-Queuename"] == "default"
    assert h["X-Appengine-Taskname"] == name
    assert h["X-Appengine-Taskretrycount"] == "0"
    assert h["X-Appengine-Taskexecutioncount"] == "0"
    assert float(h["X-Appengine-Tasketa"]) > time.time() - 60
    assert h["X-Appengine-User-Ip"] == "0.1.0.2"
    assert h["X-Custom"] == "c1"
    assert "X-Appengine-Cron" not in h
    time.sleep(1)
    assert len(seen(tq, "basic")) == 1          # a 2xx completes the task


def test_failing_task_retried_with_counts(tq):
    get(tq, "/add", tag="fail2-a", queue="fast")
    rows = wait_seen(tq, "fail2-a", 3, timeout=30)
    assert [r["headers"]["X-Appengine-Taskretrycount"] for r in rows] == ["0", "1", "2"]
    assert [r["headers"]["X-Appengine-Taskexecutioncount"] for r in rows] == ["0", "1", "2"]
    assert all(r["headers"]["X-Appengine-Queuename"] == "fast" for r in rows)
    # backoff: min 0.5 s, then doubled
    assert rows[1]["at"] - rows[0]["at"] >= 0.4
    time.sleep(2)
    assert len(seen(tq, "fail2-a")) == 3


def test_named_task_twice(tq):
    assert get(tq, "/add", tag="named", name="only-once", countdown="600") == "only-once"
    assert get(tq, "/add", tag="named", name="only-once", countdown="600") == "error:TaskAlreadyExistsError"
    assert get(tq, "/add", tag="named", name="bad name!") == "error:InvalidTaskNameError"
    # run then tombstoned
    get(tq, "/add", tag="named2", name="runs-once")
    wait_seen(tq, "named2", 1)
    time.sleep(0.5)
    assert get(tq, "/add", tag="named2", name="runs-once") == "error:TombstonedTaskError"
    assert get(tq, "/add", tag="x", queue="nosuch") == "error:UnknownQueueError"


def test_countdown_and_eta(tq):
    t0 = time.time()
    get(tq, "/add", tag="countdown", countdown="3")
    get(tq, "/add", tag="eta", eta=str(t0 + 4))
    time.sleep(2)
    assert seen(tq, "countdown") == [] and seen(tq, "eta") == []
    rows = wait_seen(tq, "countdown", 1)
    assert rows[0]["at"] >= t0 + 3
    rows = wait_seen(tq, "eta", 1)
    assert rows[0]["at"] >= t0 + 4


def test_pull_queue(tq):
    get(tq, "/pull", op="add")
    assert get(tq, "/pull", op="stats") == "4"
    leased = json.loads(get(tq, "/pull", op="lease_tag", tag="a"))
    assert sorted(t[1] for t in leased) == ["a", "a"]
    leased = json.loads(get(tq, "/pull", op="lease", secs="60"))
    assert sorted(t[1] for t in leased) == ["p0", "p2"]       # the "a" ones are leased
    assert all(t[2] == 1 for t in leased)
    assert json.loads(get(tq, "/pull", op="lease")) == []
    assert get(tq, "/pull", op="delete_all") == "0"
    get(tq, "/purge", queue="pullq")
    assert get(tq, "/pull", op="stats") == "0"
    # push task into a pull queue is refused; lease modification works
    get(tq, "/pull", op="add")
    name = get(tq, "/pull", op="modify")
    assert name.startswith("task")
    get(tq, "/purge", queue="pullq")


def test_purge_and_pause(tq):
    get(tq, "/pause", queue="held", pause="1")
    for i in range(3):
        get(tq, "/add", tag="held", queue="held")
    time.sleep(1.5)
    assert seen(tq, "held") == []
    assert get(tq, "/stats", queue="held") == "3"
    get(tq, "/pause", queue="held", pause="0")
    wait_seen(tq, "held", 3)
    get(tq, "/add", tag="purged", countdown="2", queue="held")
    get(tq, "/add", tag="purged", countdown="2", queue="held")
    assert get(tq, "/stats", queue="held") == "2"
    get(tq, "/purge", queue="held")
    assert get(tq, "/stats", queue="held") == "0"
    time.sleep(3)
    assert seen(tq, "purged") == []


def test_deferred(tq):
    get(tq, "/defer", tag="deferred")
    rows = wait_seen(tq, "deferred", 1)
    assert rows[0]["headers"] == {"value": 42}


def test_forged_headers_get_nothing(tq):
    forged = {"X-AppEngine-QueueName": "default", "X-AppEngine-TaskName": "forged",
              "X-AppEngine-Cron": "true", "X-Cyclozzo-Internal": "1700000000." + "0" * 64}
    r = requests.get(tq["base"] + "/admin/x", headers=forged, allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/_ah/login" in r.headers["Location"]
    # a token of the right shape and time, but not signed with the installation's key
    fresh = dict(forged, **{"X-Cyclozzo-Internal": "%d.%s" % (time.time(), "ab" * 32)})
    r = requests.get(tq["base"] + "/admin/x", headers=fresh, allow_redirects=False, timeout=10)
    assert r.status_code == 302 and "/_ah/login" in r.headers["Location"]
    r = requests.post(tq["base"] + "/work?tag=forged", headers=forged, data="x", timeout=10)
    assert r.status_code == 200
    h = seen(tq, "forged")[0]["headers"]
    assert "X-Appengine-Queuename" not in h and "X-Appengine-Cron" not in h and "X-Appengine-Taskname" not in h
    assert h["X-Appengine-User-Ip"] == "127.0.0.1"
    # the deferred handler refuses requests that are not tasks
    r = requests.post(tq["base"] + "/_ah/queue/deferred", headers=forged, data=b"x", timeout=10)
    assert r.status_code in (403, 500) or r.status_code >= 400


def test_task_survives_kill9(tq):
    get(tq, "/add", tag="kill9", countdown="3")
    assert json.loads(get(tq, "/txadd", tag="kill9-tx", mode="commit", countdown="3"))["attempts"] == 1
    out = cz("--status", env=tq["env"]).stdout
    line = [l for l in out.splitlines() if f" {tq['port']} " in l][0]
    pid = int(line.split()[2])
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    tq["start"]()
    rows = wait_seen(tq, "kill9", 1, timeout=30)
    assert rows[0]["headers"]["X-Appengine-Queuename"] == "default"
    assert [r["body"] for r in wait_seen(tq, "kill9-tx", 1, timeout=30)] == ["attempt-1"]


def test_cron_fires_every_minute(tq):
    # every 1 minutes: first run a minute after the daemon (re)started
    wait = tq["started"] + 60 - time.time()
    rows = wait_seen(tq, "cron", 1, timeout=max(wait, 0) + 20)
    h = rows[0]["headers"]
    assert h["X-Appengine-Cron"] == "true"
    assert "X-Appengine-Queuename" not in h


def spread(rows):
    at = sorted(r["at"] for r in rows)
    return at[-1] - at[0]


def test_rate_and_bucket_govern_delivery(tq):
    # 5/s with a bucket of 1: the first task at once, then one every 0.2 s
    get(tq, "/bulk", tag="rate5", queue="slow", n="20")
    rows = wait_seen(tq, "rate5", 20, timeout=30)
    assert spread(rows) >= 3.5, spread(rows)
    gaps = [b - a for a, b in zip(sorted(r["at"] for r in rows), sorted(r["at"] for r in rows)[1:])]
    assert min(gaps) > 0.05, gaps          # never a burst
    assert all(r["headers"]["queue"] == "slow" for r in rows)


def test_max_concurrent_requests(tq):
    # each delivery takes 0.3 s; the app counts deliveries in flight (memcache)
    get(tq, "/bulk", tag="one-at-a-time", queue="single", n="8", sleep="0.3")
    get(tq, "/bulk", tag="four-at-a-time", queue="wide", n="8", sleep="0.3")
    one = wait_seen(tq, "one-at-a-time", 8, timeout=30)
    four = wait_seen(tq, "four-at-a-time", 8, timeout=30)
    assert max(r["headers"]["conc"] for r in one) == 1
    assert spread(one) >= 7 * 0.3 - 0.05
    conc = max(r["headers"]["conc"] for r in four)
    assert 1 < conc <= 4, conc             # the control: the app does run tasks side by side


def test_update_queue_changes_the_rate(tq):
    assert get(tq, "/update", queue="tuned", rate="2", bucket="1") == "ok"
    get(tq, "/bulk", tag="tuned", queue="tuned", n="6")
    rows = wait_seen(tq, "tuned", 6, timeout=30)
    assert spread(rows) >= 2.3, spread(rows)
    assert get(tq, "/update", queue="nosuch", rate="2", bucket="1") == "error:1"        # UNKNOWN_QUEUE
    assert get(tq, "/update", queue="tuned", rate="600", bucket="1") == "error:8"       # INVALID_QUEUE_RATE
    assert get(tq, "/update", queue="tuned", rate="100", bucket="20") == "ok"


def test_transactional_add_commit(tq):
    assert json.loads(get(tq, "/txadd", tag="tx-commit", mode="commit")) == {"attempts": 1, "n": 1}
    rows = wait_seen(tq, "tx-commit", 1)
    assert rows[0]["body"] == "attempt-1"
    assert rows[0]["headers"]["X-Appengine-Queuename"] == "default"
    time.sleep(1)
    assert len(seen(tq, "tx-commit")) == 1


def test_transactional_add_rollback(tq):
    before = int(get(tq, "/stats", queue="default"))
    assert json.loads(get(tq, "/txadd", tag="tx-rollback", mode="rollback")) == {"attempts": 1, "n": None}
    assert int(get(tq, "/stats", queue="default")) <= before
    time.sleep(2)
    assert seen(tq, "tx-rollback") == []


def test_transactional_add_conflict_retried(tq):
    # the first attempt's commit conflicts; ndb runs the function again and
    # only the committed (second) attempt's task may run
    assert json.loads(get(tq, "/txadd", tag="tx-conflict", mode="conflict")) == {"attempts": 2, "n": 101}
    rows = wait_seen(tq, "tx-conflict", 1)
    time.sleep(1.5)
    rows = seen(tq, "tx-conflict")
    assert [r["body"] for r in rows] == ["attempt-2"]


def test_transactional_deferred(tq):
    assert json.loads(get(tq, "/txadd", tag="tx-deferred", mode="deferred")) == {"attempts": 1, "n": 1}
    rows = wait_seen(tq, "tx-deferred", 1)
    assert rows[0]["headers"] == {"value": 7}


def settled(tq, tag, quiet=2.0, timeout=30):
    """The deliveries of tag once none came for `quiet` seconds."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        rows = seen(tq, tag)
        if last is not None and len(rows) == len(last) and rows and time.time() - rows[-1]["at"] >= quiet:
            return rows
        last = rows
        time.sleep(0.5)
    raise AssertionError(f"{tag}: deliveries did not stop: {len(last or [])}")


def test_retry_limits(tq):
    get(tq, "/add", tag="failall-count", queue="limited")
    rows = settled(tq, "failall-count")
    assert [r["headers"]["X-Appengine-Taskretrycount"] for r in rows] == ["0", "1", "2"]
    assert all(b["at"] - a["at"] >= 0.15 for a, b in zip(rows, rows[1:]))
    # the task's own retry options win over the queue's
    get(tq, "/add", tag="failall-once", queue="limited", retry_limit="0")
    assert len(settled(tq, "failall-once")) == 1
    # age limit only: retried every 0.3 s until a failure comes after the first second
    get(tq, "/add", tag="failall-aged", queue="aged")
    rows = settled(tq, "failall-aged")
    assert 3 <= len(rows) <= 6, len(rows)
    assert rows[-1]["at"] - rows[0]["at"] >= 0.9
    assert get(tq, "/stats", queue="aged") == "0"


def test_push_task_reaches_admin_handler(tq):
    # tasks come from the platform, so login: admin handlers take them
    get(tq, "/add", tag="ignored", url="/admin/x-task")
    rows = wait_seen(tq, "x-task", 1)
    assert rows[0]["headers"]["X-Appengine-Queuename"] == "default"


def test_query_tasks_and_stats(tq):
    t0 = time.time()
    a = get(tq, "/add", tag="q1", queue="parked", countdown="600", payload="first")
    b = get(tq, "/add", tag="q2", queue="parked", countdown="900", payload="second")
    out = json.loads(get(tq, "/query", queue="parked"))
    assert [t["name"] for t in out["tasks"]] == [a, b]              # ETA order
    t = out["tasks"][0]
    assert t["url"] == "/work/q1" and t["body"] == "first" and t["method"] == 2    # POST
    assert t["headers"]["X-Custom"] == "c1"
    assert abs(t["eta"] / 1e6 - (t0 + 600)) < 30
    assert out["stats"][0] == 2 and out["stats"][1] == t["eta"]
    get(tq, "/purge", queue="parked")
    assert json.loads(get(tq, "/query", queue="parked"))["tasks"] == []


def test_transactional_bulk_add_and_limit(tq):
    assert json.loads(get(tq, "/txadd", tag="tx-bulk", mode="bulk")) == {"attempts": 1, "n": 1}
    rows = wait_seen(tq, "tx-bulk", 2)
    assert sorted(r["body"] for r in rows) == ["bulk-0", "bulk-1"]
    # App Engine's limit: 5 tasks per transaction; the sixth is refused, the five run
    assert json.loads(get(tq, "/txadd", tag="tx-many", mode="toomany")) == {"attempts": 2, "n": 1}
    rows = wait_seen(tq, "tx-many", 5)
    time.sleep(1)
    assert sorted(r["body"] for r in seen(tq, "tx-many")) == ["many-%d" % i for i in range(5)]
