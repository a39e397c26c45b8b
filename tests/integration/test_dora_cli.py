"""`python -m shared.cli dora ...` against the embedded warehouse."""

from __future__ import annotations

import json

import pytest

from shared.cli.__main__ import main
from tests.conftest import load_fixture

DOC = load_fixture("dora/handcomputed.json")


@pytest.fixture
def cli_env(base_env, tmp_path, monkeypatch):
    for key, value in {**base_env, "DORA_SERVICE_MAP": json.dumps(DOC["serviceMap"])}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no local.settings.json here
    from shared.dora import service
    from shared.dora.model import parse_deployments, parse_problems
    from shared.runtime import Runtime
    from shared.settings import load_settings

    runtime = Runtime(load_settings())
    service.write(runtime, deploys=parse_deployments(DOC["deployments"]), problems=parse_problems(DOC["problems"]))
    return tmp_path


def test_metrics_and_failed_deploys_from_the_cli(cli_env, capsys):
    assert main(["dora", "metrics", "--from", "2026-03-02", "--to", "2026-03-08", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == DOC["expected"]
    assert main(["dora", "metrics", "--from", "2026-03-02", "--to", "2026-03-08"]) == 0
    table = capsys.readouterr().out
    assert "checkout" in table and "50.0%" in table and "low" in table
    assert main(["dora", "failed-deploys", "--service", "search", "--from", "2026-03-02", "--to", "2026-03-08"]) == 0
    assert "s1" in (out := capsys.readouterr().out) and "P1 pF" in out and "20 min after" in out


def test_csv_mappings_load_or_fail_naming_the_line(cli_env, capsys):
    good = cli_env / "services.csv"
    good.write_text("service,squad,component,aliases\nbilling,payments,billing,billing-ci;billing-api\n")
    assert main(["dora", "services", "load", "--csv", str(good)]) == 0
    assert "1 services loaded" in capsys.readouterr().out
    assert main(["dora", "services", "list", "--json"]) == 0
    listed = {s["service"]: s for s in json.loads(capsys.readouterr().out)}
    assert listed["billing"]["aliases"] == ["billing-api", "billing-ci"]
    bad = cli_env / "components.csv"
    bad.write_text("resource_id,component\nnot-a-resource-id,checkout\n")
    assert main(["dora", "components", "load", "--csv", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["dora", "metrics", "--from", "yesterday"]) == 2
