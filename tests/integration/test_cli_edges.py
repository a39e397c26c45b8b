"""CLI edge cases a newcomer hits: folders and missing folders as paths, duplicate meter rows, negative costs,
file permissions, the same simple CSV for ingest and score, --effect validation, a readable outbox listing."""

import csv
import json
import os
import stat
from datetime import date, timedelta

import pytest

from shared.cli.__main__ import main
from shared.observability import wants_json


@pytest.fixture
def cli_env(env, tmp_path, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


def _simple_csv(path, *, duplicate=False, negative=False, days=40):
    start = date(2026, 9, 1)
    lines = ["series_id,date,cost"]
    for i in range(days):
        day = start + timedelta(days=i)
        for series in ("vm-a", "vm-b"):
            cost = 100.0 + (i % 7)
            if duplicate and series == "vm-a":  # two meters of one resource-day
                lines.append(f"{series},{day},{cost / 2}")
                lines.append(f"{series},{day},{cost / 2}")
            else:
                lines.append(f"{series},{day},{-5.0 if negative and i == 3 and series == 'vm-b' else cost}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_refuses_folders_and_missing_folders_in_one_line(tmp_path, capsys):
    src = _simple_csv(tmp_path / "in.csv")
    assert main(["costs", "score", "--input", str(src), "--output", str(tmp_path)]) == 2
    assert "is a folder: give a file name" in capsys.readouterr().err
    assert main(["costs", "score", "--input", str(tmp_path), "--output", str(tmp_path / "o.csv")]) == 2
    assert "--input" in capsys.readouterr().err
    missing = tmp_path / "nope" / "o.csv"
    assert main(["costs", "score", "--input", str(src), "--output", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and ".scores-" not in err and "Traceback" not in err
    assert main(["costs", "backtest", "--input", str(src), "--days", "2", "--output", str(tmp_path)]) == 2


def test_score_sums_duplicate_series_days_says_so_and_writes_a_normally_readable_file(tmp_path, capsys):
    src = _simple_csv(tmp_path / "in.csv", duplicate=True)
    out = tmp_path / "o.csv"
    assert main(["costs", "score", "--input", str(src), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "40 row(s) repeated a series and date" in err and "summed" in err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"series_id", "date", "cost", "expected", "anomaly", "severity"} <= set(rows[0])
    vm_a = next(r for r in rows if r["series_id"] == "vm-a")
    vm_b = next(r for r in rows if r["series_id"] == "vm-b")
    assert float(vm_a["cost"]) == float(vm_b["cost"]) == 104.0  # the two halves summed back
    mode = stat.S_IMODE(os.stat(out).st_mode)
    assert mode & 0o044, oct(mode)  # readable by others as the umask allows, not the temp file's 0600


def test_a_negative_cost_is_explained_in_plain_numbers(tmp_path, capsys):
    src = _simple_csv(tmp_path / "in.csv", negative=True)
    assert main(["costs", "score", "--input", str(src), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "-5.00" in err and "np.float64" not in err and "refund or correction" in err


def test_ingest_takes_the_same_simple_csv_as_score(cli_env, tmp_path, capsys):
    src = _simple_csv(tmp_path / "in.csv")
    assert main(["costs", "ingest", "--json", str(src)]) == 0
    captured = capsys.readouterr()
    (run,) = json.loads(captured.out)
    assert run["status"] == "loaded" and run["rows"] > 0 and "series_id,date,cost file" in captured.err
    assert main(["costs", "ingest", "--json", str(src)]) == 0  # reloading the same file adds nothing
    assert json.loads(capsys.readouterr().out)[0]["status"] == "already_loaded"


def test_policy_plan_refuses_an_unknown_effect(tmp_path, capsys):
    events = tmp_path / "e.json"
    events.write_text("[]")
    with pytest.raises(SystemExit) as exit_:
        main(["policy", "plan", "--events", str(events), "--effect", "bogus"])
    assert exit_.value.code == 2 and "'bogus' is not an Azure Policy effect" in capsys.readouterr().err


def test_logs_are_text_on_a_terminal_and_json_otherwise():
    class Tty:
        def isatty(self):
            return True

    class Pipe:
        def isatty(self):
            return False

    assert not wants_json("auto", Tty()) and wants_json("auto", Pipe())
    assert wants_json("json", Tty()) and not wants_json("text", Pipe())


def test_alerts_outbox_lists_title_squad_and_channel(cli_env, tmp_path, capsys):
    from shared.alerts.cards import adaptive_card_message, alert_content
    from shared.alerts.model import Alert
    from shared.alerts.outbox import Outbox

    alert = Alert(
        kind="cost_anomaly",
        severity="warning",
        title="Cost anomaly: vm-a +$500/day",
        resource_id="/subscriptions/s/vm-a",
        owner="payments",
        facts=(),
        links=(),
        dedupe_key="cost-anomaly:ce-1",
    )
    Outbox(cli_env["OUTBOX_DIR"]).write(
        "teams", "open", alert.dedupe_key, alert.fingerprint(), adaptive_card_message(alert_content(alert, "payments"))
    )
    Outbox(cli_env["OUTBOX_DIR"]).write(
        "servicenow", "open", "k", "f" * 8, {"short_description": "VM down", "assignment_group": "Cloud Platform"}
    )
    assert main(["alerts", "outbox"]) == 0
    out = capsys.readouterr().out
    assert "teams" in out and "payments" in out and "Cost anomaly: vm-a +$500/day" in out
    assert "servicenow" in out and "Cloud Platform" in out and "VM down" in out
    for entry in Outbox(cli_env["OUTBOX_DIR"]).entries():
        assert stat.S_IMODE(os.stat(entry.path).st_mode) & 0o044, "outbox files are readable, not 0600"
