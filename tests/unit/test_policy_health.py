"""The policy health check: mode, credential kind, and poison work items waiting for an operator."""

from types import SimpleNamespace

from shared.health import check_policy_remediation
from shared.settings import load_settings


class Queues:
    def __init__(self, n):
        self.n = n

    def queue_length(self, queue):
        assert queue == "policy-work-poison"
        return self.n


def test_poison_work_items_make_the_policy_check_warn(tmp_path):
    settings = load_settings({"ARM_ENDPOINT": "http://127.0.0.1:9999"}, local_settings=tmp_path / "none.json")
    ok = check_policy_remediation(SimpleNamespace(settings=settings, storage=Queues(0)))
    assert ok.status == "ok" and "static dev credential" in ok.detail and "dry-run" in ok.detail
    warn = check_policy_remediation(SimpleNamespace(settings=settings, storage=Queues(3)))
    assert warn.status == "warn" and "3 poison" in warn.detail


def test_azure_endpoint_uses_default_azure_credential(tmp_path):
    settings = load_settings({}, local_settings=tmp_path / "none.json")
    check = check_policy_remediation(SimpleNamespace(settings=settings, storage=Queues(0)))
    assert "DefaultAzureCredential" in check.detail
