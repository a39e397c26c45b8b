"""Settings in the Functions host: loaded leniently, each bad one fails only where it is read."""

from __future__ import annotations

import logging

import pytest

from functions import costs as cost_functions
from shared.adapters.storage_connection import resolve_storage_connection
from shared.alerts.outbox import BlobOutbox, ChannelNotConfiguredError, NoOutbox, Outbox, describe_outbox, outbox_for
from shared.errors import SettingsError
from shared.observability import configure
from shared.settings import load_settings, running_in_azure, settings_problems

AZURE = {"WEBSITE_SITE_NAME": "func-valueflow-dev-abc123", "AzureWebJobsStorage__accountName": "vfdevapp"}
KV_REF = "@Microsoft.KeyVault(SecretUri=https://kv-dev-abc123.vault.azure.net/secrets/alert-routes/)"


def lenient(env, tmp_path):
    return load_settings(env, local_settings=tmp_path / "absent.json", strict=False)


def test_a_bad_setting_raises_only_when_read_naming_it(tmp_path):
    s = lenient({"REMEDIATION_MODE": "bogus", "VALUEFLOW_PORT": "x"}, tmp_path)
    assert s.cost_critical_usd_per_hour == 1000.0  # the others work
    with pytest.raises(SettingsError) as err:
        s.remediation_mode  # noqa: B018
    assert err.value.detail == "app setting REMEDIATION_MODE: expected one of dry-run, enforce; got 'bogus'"
    assert err.value.errors == [
        {"setting": "REMEDIATION_MODE", "problem": "expected one of dry-run, enforce; got 'bogus'"}
    ]
    assert {p["setting"] for p in settings_problems(s)} == {"REMEDIATION_MODE", "VALUEFLOW_PORT"}
    assert "remediation_mode=<invalid>" in repr(s)


def test_strict_loading_still_refuses_everything_at_once(tmp_path):
    with pytest.raises(SettingsError, match="REMEDIATION_MODE.*VALUEFLOW_PORT"):
        load_settings({"REMEDIATION_MODE": "bogus", "VALUEFLOW_PORT": "x"}, local_settings=tmp_path / "n.json")


def test_an_unresolved_key_vault_reference_is_reported_as_such_without_its_value(tmp_path):
    s = lenient({"ALERT_ROUTES": KV_REF}, tmp_path)
    [problem] = settings_problems(s)
    assert problem["setting"] == "ALERT_ROUTES"
    assert problem["problem"].startswith("unresolved Key Vault reference")
    assert "kv-dev-abc123" not in problem["problem"]
    with pytest.raises(SettingsError, match="ALERT_ROUTES: unresolved Key Vault reference"):
        s.alert_routes  # noqa: B018


def test_cross_checks_mark_the_setting_that_is_missing(tmp_path):
    s = lenient({"WAREHOUSE": "snowflake", "SNOWFLAKE_USER": "svc"}, tmp_path)
    assert s.warehouse == "snowflake"
    with pytest.raises(SettingsError, match="SNOWFLAKE_ACCOUNT: required when WAREHOUSE=snowflake"):
        s.snowflake_account  # noqa: B018
    with pytest.raises(SettingsError, match="SNOWFLAKE_PRIVATE_KEY: WAREHOUSE=snowflake needs"):
        s.snowflake_private_key  # noqa: B018


def test_in_azure_the_embedded_warehouse_and_azurite_are_refused(tmp_path):
    assert running_in_azure({"WEBSITE_INSTANCE_ID": "x"}) and not running_in_azure({"CONTAINER_NAME": "x"})
    s = lenient({"WEBSITE_SITE_NAME": "func-x"}, tmp_path)
    assert s.in_azure()
    problems = {p["setting"]: p["problem"] for p in settings_problems(s)}
    assert "local development warehouse" in problems["WAREHOUSE"]
    assert "UseDevelopmentStorage=true" in problems["AzureWebJobsStorage"]
    with pytest.raises(SettingsError, match="WAREHOUSE"):
        s.warehouse  # noqa: B018
    assert not lenient({}, tmp_path).in_azure()


def test_identity_based_storage_resolves_like_the_functions_runtime():
    # account name only: endpoints derived with the configured suffix
    conn = resolve_storage_connection(
        "AzureWebJobsStorage",
        {
            "AzureWebJobsStorage__accountName": "vfdevapp",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
        },
        endpoint_suffix="core.chinacloudapi.cn",
    )
    assert conn.identity_based and conn.credential == "managedidentity"
    assert conn.endpoint("queue") == "https://vfdevapp.queue.core.chinacloudapi.cn"
    assert conn.client_id.startswith("1111")
    assert "user-assigned managed identity" in conn.describe()
    # explicit service URIs win, and a service without one is named when used
    conn = resolve_storage_connection(
        "X", {"X__blobServiceUri": "https://blob.example.net/", "X": "UseDevelopmentStorage=true"}
    )
    assert conn.endpoint("blob") == "https://blob.example.net"
    with pytest.raises(SettingsError, match="X: no table endpoint: set X__accountName or X__tableServiceUri"):
        conn.endpoint("table")
    # a connection string when there is no identity-based setting
    assert resolve_storage_connection("X", {"X": "UseDevelopmentStorage=true"}).connection_string
    with pytest.raises(SettingsError, match="X: set a connection string or X__accountName"):
        resolve_storage_connection("X", {})
    with pytest.raises(SettingsError, match="X__credential"):
        resolve_storage_connection("X", {"X__accountName": "a", "X__credential": "secret"})


def test_settings_hand_the_storage_connection_settings_over(tmp_path):
    s = lenient(
        {
            "AzureWebJobsStorage__accountName": "vfdevapp",
            "AzureWebJobsStorage__queueServiceUri": "https://q.example.net",
        },
        tmp_path,
    )
    values = s.connection_values("AzureWebJobsStorage")
    assert values["AzureWebJobsStorage__accountName"] == "vfdevapp"
    assert values["AzureWebJobsStorage__queueServiceUri"] == "https://q.example.net"
    assert "COST_EXPORT_STORAGE" not in values and s.storage_identity_based()


class _Blobs:
    def __init__(self):
        self.put: list[tuple[str, str, bytes]] = []

    def put_blob(self, container, name, data, *, overwrite=True):
        self.put.append((container, name, data))


def test_the_outbox_is_a_local_folder_only_outside_azure(tmp_path):
    local = lenient({"OUTBOX_DIR": str(tmp_path / "o")}, tmp_path)
    assert isinstance(outbox_for(local, _Blobs()), Outbox)
    assert "local outbox" in describe_outbox(local)

    blobs = _Blobs()
    azure = lenient(
        {**AZURE, "WAREHOUSE": "snowflake", "SNOWFLAKE_ACCOUNT": "a", "SNOWFLAKE_USER": "u", "SNOWFLAKE_PASSWORD": "p"},
        tmp_path,
    )
    box = outbox_for(azure, blobs)
    assert isinstance(box, BlobOutbox)
    where = box.write("teams", "open", "cost:1", "abcdef0123", {"type": "message"})
    assert where.parts[0] == "alerts-outbox" and blobs.put[0][0] == "alerts-outbox"
    assert "blob container alerts-outbox" in describe_outbox(azure) and "not delivered" in describe_outbox(azure)

    none = lenient({**AZURE, "OUTBOX_CONTAINER": "none"}, tmp_path)
    box = outbox_for(none, blobs)
    assert isinstance(box, NoOutbox)
    with pytest.raises(ChannelNotConfiguredError, match="TEAMS_DEFAULT_WEBHOOK_URL.*alert not delivered"):
        box.write("teams", "open", "cost:1", "abcdef0123", {})


def test_under_the_functions_host_logging_adds_no_handler_of_its_own(tmp_path, monkeypatch):
    import shared.observability as obs

    monkeypatch.setattr(obs, "_configured", False)
    root = logging.getLogger()
    before = list(root.handlers)
    configure(lenient({"VALUEFLOW_LOG_FORMAT": "bogus"}, tmp_path), under_host=True)
    assert root.handlers == before  # the worker's handler forwards to the host: one telemetry path


def test_cost_queue_names_in_the_bindings_are_the_ones_the_cost_code_uses():
    from shared.costs.fanout import PARTITION_QUEUE
    from shared.costs.loader import INGEST_QUEUE

    assert (cost_functions.INGEST_QUEUE, cost_functions.PARTITION_QUEUE) == (INGEST_QUEUE, PARTITION_QUEUE)
