"""The real function_app on the local host."""

import pytest

from tests.conftest import start_host, stop_host

pytestmark = pytest.mark.e2e


@pytest.fixture
def app_host(env, tmp_path):
    host = start_host(env, tmp_path / "host.log")
    yield host
    stop_host(host)


def test_health_reports_each_dependency_without_secrets(app_host, env):
    status, _, body = app_host.request("GET", "/api/health")
    assert status == 200, app_host.log()[-2000:]
    names = {d["name"]: d["status"] for d in body["dependencies"]}
    assert names["storage"] == "ok" and names["warehouse"] == "ok"
    assert body["status"] in ("healthy", "degraded")
    assert "AccountKey" not in str(body)


def test_health_needs_the_function_key(app_host):
    assert app_host.request("GET", "/api/health", key=False)[0] == 401
