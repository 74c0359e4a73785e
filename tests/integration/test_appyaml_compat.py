"""app.yaml compatibility: Cyclozzo's loader against Google's own parser.

For every file in tests/appyaml-corpus/ (ok-*.yaml must be accepted, bad-*.yaml
refused), bin/cz-appyaml-check and the App Engine SDK's appinfo parser
(google.appengine.api.appinfo, from appengine-python-standard) must agree on
accept/refuse, and every refusal from Cyclozzo must be one line naming the
file and the line: "PATH:LINE: reason".

The SDK side runs what Google's tooling runs on an app.yaml: LoadSingleAppInfo
(parse + per-field validation), CheckInitialized (the cross-field rules, also
for a file holding only "---"), then the includes merged the SDK's way
(LoadAppInclude + AppInclude.MergeAppYamlAppInclude, files found relative to
the app.yaml) and the 100-handler limit on the merged list.

KNOWN_DIFFERENCES lists the few files where the SDK's parser is more lenient
than the App Engine service that receives the deployment; Cyclozzo follows the
service there and refuses them.  For those the test asserts that exact split
(SDK accepts, Cyclozzo refuses), so a change on either side is noticed.
"""
import glob
import os
import re
import subprocess

import pytest

from conftest import BIN, ROOT

CORPUS = os.path.join(ROOT, "tests", "appyaml-corpus")
CHECK = os.path.join(BIN, "cz-appyaml-check")

KNOWN_DIFFERENCES = {
    # appinfo checks a handler url only against its shape (starts with "/"),
    # never compiling it; App Engine compiles handler patterns at deployment
    # and rejects ones that do not compile, and Cyclozzo must compile them to
    # route at all.
    "bad-url-regex.yaml": "SDK does not compile handler url patterns",
    "bad-upload-regex.yaml": "SDK does not compile upload patterns",
    # appinfo validates a skip_files list while it is still empty (the YAML
    # builder appends the items afterwards), so a broken pattern in list form
    # slips through; the string form is compiled and refused.
    "bad-skip-files-list-regex.yaml": "SDK validates skip_files lists before they are filled",
    # appinfo declares url optional, but a handler without a url can never
    # match a request; the Admin API requires urlRegex on every handler.
    "bad-handler-no-url.yaml": "SDK treats url as optional",
    # appinfo types instance_class as any string; App Engine documents and
    # enforces the class names (and sizes instances by them, as Cyclozzo does).
    "bad-instance-class-unknown.yaml": "SDK accepts any instance_class string",
    # appinfo converts boolean fields with Python's bool(), so any non-empty
    # string is True; the Admin API takes real booleans.
    "bad-threadsafe-string.yaml": "SDK applies bool() to any value",
    # appinfo checks only that these are numbers; App Engine documents the
    # ranges (target_cpu_utilization 0.5-0.95, min_instances 0-1000).
    "bad-auto-target-cpu-range.yaml": "SDK does not range-check utilization",
    "bad-auto-min-instances-negative.yaml": "SDK does not range-check min_instances",
}


def corpus_files():
    files = sorted(glob.glob(os.path.join(CORPUS, "*.yaml")))
    return [os.path.basename(f) for f in files]


def _find_include(from_path, name, app_dir):
    """Where App Engine looks for an include: next to the including file, then
    in the app directory; a directory means its include.yaml."""
    for base in (os.path.dirname(from_path), app_dir):
        p = os.path.join(base, name)
        if os.path.isdir(p):
            p = os.path.join(p, "include.yaml")
        if os.path.isfile(p):
            return os.path.abspath(p)
    return None


def sdk_verdict(path):
    """(accepted, message) from Google's appinfo for the app.yaml at path."""
    from google.appengine.api import appinfo
    from google.appengine.api import appinfo_errors

    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return False, "not UTF-8: %s" % e
    try:
        info = appinfo.LoadSingleAppInfo(text)
        info.CheckInitialized()
        app_dir = os.path.dirname(path)
        seen = set()
        aggregate = appinfo.AppInclude()

        def resolve(from_path, includes):
            for name in includes or []:
                inc = _find_include(from_path, name, app_dir)
                if inc is None or inc in seen:
                    continue
                seen.add(inc)
                with open(inc) as f:
                    inc_info = appinfo.LoadAppInclude(f.read())
                appinfo.AppInclude.MergeAppIncludes(aggregate, inc_info)
                resolve(inc, inc_info.includes)

        resolve(path, info.includes)
        info = appinfo.AppInclude.MergeAppYamlAppInclude(info, aggregate)
        if info.handlers and len(info.handlers) > appinfo.MAX_URL_MAPS:
            raise appinfo_errors.TooManyURLMappings("too many handlers")
    except Exception as e:  # every SDK refusal is an exception of some kind
        return False, "%s: %s" % (type(e).__name__, e)
    return True, ""


def ours(path):
    p = subprocess.run([CHECK, path], capture_output=True, text=True, timeout=30)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode == 0, p.stdout, p.stderr


def test_corpus_is_big_and_mixed():
    names = corpus_files()
    assert len(names) >= 60
    assert sum(n.startswith("ok-") for n in names) >= 25
    assert sum(n.startswith("bad-") for n in names) >= 35
    for n in KNOWN_DIFFERENCES:
        assert n in names, n
    # the exceptions stay few
    assert len(KNOWN_DIFFERENCES) <= len(names) // 10


@pytest.mark.parametrize("name", corpus_files())
def test_agrees_with_sdk(name):
    path = os.path.join(CORPUS, name)
    sdk_ok, sdk_msg = sdk_verdict(path)
    our_ok, out, err = ours(path)
    want_ok = name.startswith("ok-")
    assert name.startswith(("ok-", "bad-")), "corpus files are named ok-* or bad-*"

    if name in KNOWN_DIFFERENCES:
        assert sdk_ok, "SDK now refuses %s (%s): drop the exception" % (name, sdk_msg)
        assert not our_ok, "Cyclozzo accepts %s" % name
    else:
        assert sdk_ok == want_ok, "SDK %s %s: %s" % ("accepts" if sdk_ok else "refuses", name, sdk_msg)
        assert our_ok == want_ok, "Cyclozzo %s %s: %s" % ("accepts" if our_ok else "refuses", name, err or out)

    if our_ok:
        assert err == ""
        assert re.search(r"^runtime: \S+$", out, re.M)
        assert re.search(r"^service: [a-z0-9-]+$", out, re.M)
    else:
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        m = re.match(r"^(.+):(\d+): (\S.*)$", lines[0])
        assert m, lines[0]
        named, line = m.group(1), int(m.group(2))
        # the file named is the corpus file, or an include it pulls in
        assert named == path or named.startswith(os.path.join(CORPUS, "inc") + os.sep), named
        with open(named, "rb") as f:
            nlines = f.read().count(b"\n") + 1
        assert 1 <= line <= nlines, lines[0]


# Files whose error must point at a specific line: the line a user would fix.
EXPECTED_LINES = {
    "bad-static-files-no-upload.yaml": 3,
    "bad-login-value.yaml": 5,
    "bad-unknown-top-key.yaml": 2,
    "bad-tab-indent.yaml": 4,
    "bad-duplicate-key.yaml": 3,
    "bad-expiration-unit.yaml": 5,
    "bad-url-regex.yaml": 3,
    "bad-inbound-unknown.yaml": 4,
    "bad-manual-instances-zero.yaml": 4,
    "bad-handlers-101.yaml": 203,
    "bad-yaml-unclosed-bracket.yaml": 3,
    "bad-tab-in-value.yaml": 2,
    "bad-invalid-utf8.yaml": 2,
}


@pytest.mark.parametrize("name,line", sorted(EXPECTED_LINES.items()))
def test_error_line(name, line):
    path = os.path.join(CORPUS, name)
    ok, _, err = ours(path)
    assert not ok
    assert err.startswith("%s:%d: " % (path, line)), err


def test_includes_merged_like_sdk():
    """Handler order after includes matches what the SDK's merge produces."""
    from google.appengine.api import appinfo
    path = os.path.join(CORPUS, "ok-includes.yaml")
    ok, out, err = ours(path)
    assert ok, err
    our_urls = re.findall(r"^handler \d+: url=(\S+)", out, re.M)

    with open(path) as f:
        info = appinfo.LoadSingleAppInfo(f.read())
    aggregate = appinfo.AppInclude()
    for name in info.includes:
        inc = _find_include(path, name, CORPUS)
        with open(inc) as f:
            appinfo.AppInclude.MergeAppIncludes(aggregate, appinfo.LoadAppInclude(f.read()))
    merged = appinfo.AppInclude.MergeAppYamlAppInclude(info, aggregate)
    assert our_urls == [h.url for h in merged.handlers]
    assert "env: FROM_INCLUDE=yes" in out
