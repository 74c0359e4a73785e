"""modules, system and capabilities through Google's SDK in a real app on a
real daemon: answers match the app.yaml (service backendsvc, version v7,
manual_scaling with 1 instance) and the running instances; operations that
cannot apply raise the SDK's documented errors."""
import pytest

from identapp_fixture import IdentApp


@pytest.fixture(scope="module")
def ia(tmp_path_factory):
    a = IdentApp(tmp_path_factory)
    yield a
    a.close()


def test_modules_answers(ia):
    d = ia.get("/modules")
    assert d["current_module"] == "backendsvc"
    assert d["current_version"] == "v7"
    assert d["modules"] == {"ok": ["backendsvc"]}
    assert d["versions"] == {"ok": ["v7"]}
    assert d["default_version"] == {"ok": "v7"}
    assert d["num_instances"] == {"ok": 1}
    assert d["hostname"] == {"ok": f"127.0.0.1:{ia.port}"}
    assert d["hostname_inst0"] == {"ok": f"127.0.0.1:{ia.port}"}


def test_modules_errors(ia):
    d = ia.get("/modules")
    assert d["versions_other"]["error"] == "InvalidModuleError"
    assert d["num_instances_badver"]["error"] == "InvalidVersionError"
    assert d["set_same"] == {"ok": None}                    # already 1: nothing to do
    assert d["set_other"]["error"] == "TransientError"
    assert d["set_zero"]["error"] == "Error" and "ApplicationError: 3" in d["set_zero"]["detail"]
    assert d["start"] == {"ok": None}                       # UNEXPECTED_STATE: "already started"
    assert d["start_bad"]["error"] == "InvalidVersionError"
    assert d["stop"]["error"] == "TransientError"
    assert d["hostname_inst5"]["error"] == "InvalidInstancesError"
    assert d["hostname_badmod"]["error"] == "InvalidModuleError"


def test_system_stats(ia):
    first = ia.get("/system")
    for _ in range(5):
        ia.get("/identity")
    d = ia.get("/system")
    # the Python runtime with the SDK loaded holds tens of MB; the limit is
    # the instance class's (F1: 768 MB in Cyclozzo) per instance
    assert 10 < d["mem_current"] < d["mem_total"]
    assert d["mem_total"] >= 256
    assert d["cpu_total"] > 0 and d["cpu_total"] >= first["cpu_total"]
    assert d["cpu_current"] >= 0
    assert "ApplicationError: 2" in d["background"]["detail"]   # BACKEND_REQUIRED


def test_capabilities_enabled(ia):
    d = ia.get("/caps")
    assert d and all(v is True for v in d.values()), d
