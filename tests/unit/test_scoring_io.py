"""The CSV contract of ``costs score`` / ``costs backtest`` (shared.costs.scoring_io)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.costs import scoring_io
from shared.costs.scoring_io import CostInputError, backtest_csv, load_cost_matrix, score_csv

START = np.datetime64("2025-01-01", "D")
REQUIRED_OUTPUT = ["series_id", "date", "cost", "expected", "anomaly", "severity"]


def write_costs(path: Path, rows: Sequence[Sequence[object]], header: str = "series_id,date,cost") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(header + "\n")
        csv.writer(handle).writerows(rows)
    return path


def daily_rows(series_id: str, costs: list[float] | np.ndarray, first_day: int = 0) -> list[tuple[str, str, object]]:
    return [(series_id, str(START + first_day + i), f"{c:.2f}") for i, c in enumerate(costs)]


def steady(level: float, days: int = 60, seed: int = 0) -> np.ndarray:
    return level * np.exp(np.random.default_rng(seed).normal(0.0, 0.03, days))


@pytest.fixture
def cost_file(tmp_path: Path) -> Path:
    spiking = steady(100.0, seed=1)
    spiking[-1] = 900.0
    rows = daily_rows("vm-steady", steady(100.0)) + daily_rows("vm-spiking", spiking)
    rows += daily_rows("db-new", steady(40.0, days=5), first_day=55)
    rows += daily_rows("vm-deleted", steady(70.0, days=50))
    rows.reverse()  # rows in any order
    return write_costs(tmp_path / "costs.csv", rows)


def test_score_csv_scores_the_latest_date_of_each_series(cost_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    assert score_csv(cost_file, out) == 4
    frame = pd.read_csv(out).set_index("series_id")
    assert list(frame.columns[:5]) == REQUIRED_OUTPUT[1:]
    assert {
        "lower",
        "upper",
        "score",
        "excess_usd_per_day",
        "excess_usd_per_hour",
        "excess_pct",
        "status",
        "reason",
    } <= set(frame.columns)
    assert frame.loc["vm-spiking", "anomaly"] == 1
    assert frame.loc["vm-spiking", "severity"] == "warning"
    assert frame.loc["vm-steady", "anomaly"] == 0
    assert frame.loc["db-new", "status"] == "warming_up"
    # a deleted resource is scored on its own last day
    assert frame.loc["vm-deleted", "date"] == str(START + 49)
    assert frame.loc["vm-steady", "date"] == str(START + 59)
    assert set(frame["anomaly"]) <= {0, 1}


def test_missing_day_inside_a_series_life_costs_zero_and_outside_it_is_absent(tmp_path: Path) -> None:
    rows = [("a", "2025-01-01", "1.5"), ("a", "2025-01-04", "2"), ("b", "2025-01-02", "3")]
    matrix = load_cost_matrix(write_costs(tmp_path / "c.csv", rows))
    assert list(matrix.series_ids) == ["a", "b"]
    assert list(matrix.dates) == list(np.arange(START, START + 4))
    np.testing.assert_array_equal(matrix.costs, [[1.5, 0.0, 0.0, 2.0], [np.nan, 3.0, np.nan, np.nan]])


def test_other_columns_are_ignored(tmp_path: Path) -> None:
    rows = [("x", "a", "2025-01-01", "1", "EUR"), ("x", "a", "2025-01-02", "2", "EUR")]
    path = write_costs(tmp_path / "c.csv", rows, header="tenant,series_id,date,cost,currency")
    assert score_csv(path, tmp_path / "o.csv") == 1


def test_backtest_writes_one_row_per_series_per_replayed_date(cost_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "backtest.csv"
    rows = backtest_csv(cost_file, 12, out)
    frame = pd.read_csv(out)
    assert rows == len(frame)
    assert list(frame.columns[:6]) == REQUIRED_OUTPUT
    counts = frame.groupby("series_id")["date"].nunique()
    # vm-deleted lived until day 49: it exists on 2 of the last 12 dates; db-new on its 5 days
    assert counts.to_dict() == {"vm-steady": 12, "vm-spiking": 12, "db-new": 5, "vm-deleted": 2}
    assert not frame.duplicated(["series_id", "date"]).any()
    spiking = frame[frame["series_id"] == "vm-spiking"].sort_values("date")
    assert spiking["anomaly"].tolist() == [0] * 11 + [1]


def test_backtest_last_date_matches_the_daily_job(cost_file: Path, tmp_path: Path) -> None:
    backtest_csv(cost_file, 3, tmp_path / "b.csv")
    score_csv(cost_file, tmp_path / "s.csv")
    replay = pd.read_csv(tmp_path / "b.csv")
    daily = pd.read_csv(tmp_path / "s.csv")
    last = replay[replay["date"] == replay["date"].max()].set_index("series_id").sort_index()
    today = daily[daily["date"] == replay["date"].max()].set_index("series_id").sort_index()
    pd.testing.assert_frame_equal(last, today)


@pytest.mark.parametrize(
    ("rows", "header", "line", "words"),
    [
        ([("a", "2025-01-01", "1")], "series_id,day,cost", 1, "missing column(s) date"),
        ([("a", "2025-01-01", "1"), ("a", "2025-01-02", "abc")], None, 3, "'abc' is not a number"),
        ([("a", "2025-01-01", "1"), ("a", "2025-01-02", "")], None, 3, "is not a number"),
        ([("a", "2025-01-01", "1"), ("a", "2025-01-02", "-3.5")], None, 3, "negative"),
        ([("a", "2025-01-01", "1"), ("a", "01/02/2025", "2")], None, 3, "not an ISO date"),
        (
            [("a", "2025-01-01", "1"), ("b", "2025-01-01", "1"), ("a", "2025-01-01", "-2")],
            None,
            2,
            "after adding its rows",
        ),
    ],
)
def test_bad_input_names_file_and_line_and_writes_nothing(
    tmp_path: Path, rows: list[tuple[str, str, object]], header: str | None, line: int, words: str
) -> None:
    source = write_costs(tmp_path / "bad.csv", rows, header=header or "series_id,date,cost")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for run in (
        lambda: score_csv(source, out_dir / "o.csv"),
        lambda: backtest_csv(source, 3, out_dir / "o.csv"),
    ):
        with pytest.raises(CostInputError) as caught:
            run()
        assert isinstance(caught.value, ValueError)
        assert caught.value.line == line
        assert str(source) in str(caught.value) and f"line {line}" in str(caught.value)
        assert words in str(caught.value)
        assert list(out_dir.iterdir()) == []


def test_failed_run_keeps_a_previous_output_intact(tmp_path: Path, cost_file: Path) -> None:
    out = tmp_path / "o.csv"
    score_csv(cost_file, out)
    before = out.read_bytes()
    bad = write_costs(tmp_path / "bad.csv", [("a", "2025-01-01", "-1")])
    with pytest.raises(CostInputError):
        score_csv(bad, out)
    assert out.read_bytes() == before


def test_pandas_fallback_reads_the_same_matrix(cost_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = load_cost_matrix(cost_file)
    monkeypatch.setattr(scoring_io, "HAVE_PYARROW", False)
    slow = load_cost_matrix(cost_file)
    assert list(slow.series_ids) == list(fast.series_ids)
    np.testing.assert_array_equal(slow.costs, fast.costs)
    np.testing.assert_array_equal(slow.dates, fast.dates)


def test_score_output_carries_the_explanation_fields(cost_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    score_csv(cost_file, out)
    frame = pd.read_csv(out).set_index("series_id")
    spiking = frame.loc["vm-spiking"]
    # reason, band, actual, excess $/day and $/hour, and the data the decision was made on
    assert spiking["reason"] == "spike" and spiking["lower"] < spiking["expected"] < spiking["upper"] < spiking["cost"]
    assert spiking["excess_usd_per_hour"] == pytest.approx(spiking["excess_usd_per_day"] / 24, abs=1e-3)
    assert spiking["history_days"] == 56 and spiking["seasonality"] in ("none", "weekly")
    assert 0 < spiking["noise"] < 0.2
    assert frame.loc["db-new", "history_days"] == 4 and pd.isna(frame.loc["db-new", "noise"])


def test_backtest_cli_shows_progress_on_stderr(
    cost_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli.__main__ import main

    out = tmp_path / "b.csv"
    assert main(["costs", "backtest", "--input", str(cost_file), "--days", "5", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    # vm-steady and vm-spiking on each of the 5 dates, db-new on its last 5 days; vm-deleted had ended
    assert "backtest: 100.0% scored" in err and "wrote 15 rows" in err
    assert len(pd.read_csv(out)) == 15


def test_several_rows_of_one_series_day_are_summed_and_noted(tmp_path: Path) -> None:
    # GIVEN two meters of one resource on one day (real exports have several rows per resource-day)
    rows = [("a", "2025-01-01", "1"), ("a", "2025-01-02", "2"), ("a", "2025-01-02", "3"), ("b", "2025-01-02", "4")]
    source = write_costs(tmp_path / "meters.csv", rows, header="series_id,date,cost")
    notes: list[str] = []
    # WHEN it is scored THEN the day holds their sum and the caller is told how many rows were added in
    score_csv(source, tmp_path / "o.csv", notes=notes)
    scored = pd.read_csv(tmp_path / "o.csv").set_index("series_id")
    assert scored.loc["a", "cost"] == 5.0 and scored.loc["b", "cost"] == 4.0
    assert notes == [
        "1 row(s) repeated a series and date (several meters per resource-day): their costs were summed into "
        "one series-day"
    ]


def test_csv_sink_writes_the_bytes_of_one_write_csv_whatever_the_slicing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    monkeypatch.setattr(scoring_io, "_SLICE_ROWS", 3)  # many slices in flight
    rng = np.random.default_rng(4)
    tables = [
        pa.table(
            {"id": pa.array([f"s{i}" for i in range(n)], pa.string()), "x": pa.array(np.round(rng.normal(size=n), 4))}
        )
        for n in (0, 7, 0, 1, 12)
    ]
    with open(tmp_path / "sliced.csv", "wb") as out:
        sink = scoring_io._CsvSink(out, threads=3)
        for table in tables:
            sink.put(table)
        sink.close()
    pacsv.write_csv(pa.concat_tables(tables), tmp_path / "whole.csv")
    assert (tmp_path / "sliced.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_backtest_scored_in_many_row_blocks_writes_the_same_file(
    cost_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functools import partial

    from shared.costs.scoring import score_days_stream

    backtest_csv(cost_file, 12, tmp_path / "one_block.csv")
    monkeypatch.setattr(scoring_io, "score_days_stream", partial(score_days_stream, chunk_rows=1, workers=2))
    monkeypatch.setattr(scoring_io, "_SLICE_ROWS", 5)
    backtest_csv(cost_file, 12, tmp_path / "blocks.csv")
    assert (tmp_path / "blocks.csv").read_bytes() == (tmp_path / "one_block.csv").read_bytes()


def test_replayed_days_without_any_series_write_no_rows_and_the_header_comes_first(tmp_path: Path) -> None:
    source = write_costs(
        tmp_path / "c.csv", daily_rows("gone", steady(5.0, days=10)) + [("late", str(START + 20), "1")]
    )
    out = tmp_path / "o.csv"
    # the last 5 dates: only "late" exists, on the last one; before that nobody
    assert backtest_csv(source, 5, out) == 1
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith('"series_id","date","cost"') and lines[1].startswith('"late"')


@pytest.mark.parametrize(
    "values",
    [
        np.array([True, False, True] * 5),
        np.array([1.5, np.nan, -0.0, 2e-4]),
        np.arange(9, dtype=np.int8),
        np.arange(3, dtype=np.int64),
        np.arange(6, dtype=np.int32)[::2],
    ],
)
def test_arrow_columns_from_numpy_buffers_are_what_pa_array_makes(values: np.ndarray) -> None:
    import pyarrow as pa

    made = scoring_io._arrow_of(values)
    assert made.equals(pa.array(values, from_pandas=True))  # NaN is a null, like pandas' missing value


def test_a_score_run_never_imports_pandas(cost_file: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    # pa.array / to_numpy import pandas on first use: a fifth of a second of every CLI run
    code = (
        "import sys\nfrom shared.costs.scoring_io import score_csv, backtest_csv\n"
        f"score_csv({str(cost_file)!r}, {str(tmp_path / 's.csv')!r})\n"
        f"backtest_csv({str(cost_file)!r}, 3, {str(tmp_path / 'b.csv')!r})\n"
        "print('pandas' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
