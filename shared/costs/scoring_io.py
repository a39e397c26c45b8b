"""CSV contract of the operator CLI: ``series_id,date,cost`` in, one scored row per series (and date) out.

``score_csv`` scores the latest date of each series with all its earlier days; ``backtest_csv`` replays
the daily job for each of the last N dates. A day without a row between a series's first and last row
costs 0; before its first and after its last row the series did not exist. Bad input raises
:class:`CostInputError` naming the file and the line; the output file is written atomically, so nothing
is left behind on error.
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from shared.costs.scoring import STATUS_ABSENT, ScoreResult, ScoringConfig, score_day_chunked

REQUIRED_COLUMNS = ("series_id", "date", "cost")
OUTPUT_COLUMNS = (
    "series_id",
    "date",
    "cost",
    "expected",
    "anomaly",
    "severity",
    "lower",
    "upper",
    "score",
    "excess_usd_per_day",
    "excess_usd_per_hour",
    "excess_pct",
    "direction",
    "status",
    "reason",
)

try:  # the fast path; pandas' C parser is the fallback
    import pyarrow as pa
    import pyarrow.csv as pacsv

    HAVE_PYARROW = True
except ImportError:  # pragma: no cover - pyarrow is in requirements
    HAVE_PYARROW = False


class CostInputError(ValueError):
    """The cost CSV cannot be scored: names the file, the 1-based line (header = line 1) and the problem."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class CostMatrix:
    """Dense daily costs: (n_series, n_days), NaN where a series did not exist."""

    series_ids: npt.NDArray[Any]
    dates: npt.NDArray[np.datetime64]
    costs: npt.NDArray[np.float64]


def _check_header(path: str | os.PathLike[str]) -> None:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if header is None:
        raise CostInputError(path, 1, "empty file, expected a header series_id,date,cost")
    missing = [c for c in REQUIRED_COLUMNS if c not in [h.strip() for h in header]]
    if missing:
        raise CostInputError(path, 1, f"missing column(s) {', '.join(missing)} (header: {','.join(header)})")


def _read_columns(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(series index per row, unique series ids, days since epoch, cost): a typed fast read."""
    if HAVE_PYARROW:
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=16 << 20),
                convert_options=pacsv.ConvertOptions(
                    include_columns=list(REQUIRED_COLUMNS),
                    column_types={"series_id": pa.string(), "date": pa.date32(), "cost": pa.float64()},
                    strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            _diagnose(path, str(exc))
            raise CostInputError(path, None, f"unreadable CSV: {exc}") from exc
        if table.num_rows == 0:
            raise CostInputError(path, None, "no data rows")
        dates, cost = table.column("date"), table.column("cost")
        if dates.null_count:
            _diagnose(path, "empty date")
        if cost.null_count:
            _diagnose(path, "empty cost")
        # the hash table is shared across chunks: the last chunk's dictionary holds every id
        encoded = table.column("series_id").dictionary_encode()
        series_index = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
        unique_ids = np.asarray(encoded.chunks[-1].dictionary.to_pylist(), dtype=object)
        day_numbers = dates.cast(pa.int32()).to_numpy().astype(np.int64)
        return series_index.astype(np.intp), unique_ids, day_numbers, cost.to_numpy()
    frame = pd.read_csv(path, usecols=list(REQUIRED_COLUMNS), dtype={"series_id": str, "date": str, "cost": str})
    if frame.empty:
        raise CostInputError(path, None, "no data rows")
    _validate_frame(path, frame)
    parsed = pd.to_datetime(frame["date"], format="%Y-%m-%d").to_numpy().astype("datetime64[D]")
    codes, uniques = pd.factorize(frame["series_id"], sort=False)
    return (
        codes.astype(np.intp),
        np.asarray(uniques, dtype=object),
        parsed.astype(np.int64),
        frame["cost"].astype(np.float64).to_numpy(),
    )


def _validate_frame(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Raise on the first row whose id, date or cost does not parse (all columns read as strings)."""
    ids = frame["series_id"]
    bad_id = ids.isna() | (ids.astype(str).str.strip() == "")
    parsed = pd.to_datetime(frame["date"], format="%Y-%m-%d", errors="coerce")
    cost = pd.to_numeric(frame["cost"], errors="coerce")
    problems = [
        (bad_id, "empty series_id"),
        (parsed.isna(), "date {date!r} is not an ISO date (YYYY-MM-DD)"),
        (cost.isna(), "cost {cost!r} is not a number"),
    ]
    for mask, message in problems:
        hits = np.flatnonzero(mask.to_numpy())
        if hits.size:
            row = int(hits[0])
            raise CostInputError(
                path, row + 2, message.format(date=frame["date"].iloc[row], cost=frame["cost"].iloc[row])
            )


def _diagnose(path: str | os.PathLike[str], hint: str) -> None:
    """Slow path after a failed typed read: find the offending line and raise a precise error."""
    frame = pd.read_csv(path, usecols=list(REQUIRED_COLUMNS), dtype=str, keep_default_na=False, na_values=[])
    _validate_frame(path, frame)
    raise CostInputError(path, None, f"unreadable CSV: {hint}")


def load_cost_matrix(path: str | os.PathLike[str]) -> CostMatrix:
    """Read a ``series_id,date,cost`` CSV into a dense matrix; validates as it goes."""
    _check_header(path)
    series_index, unique_ids, day_numbers, cost = _read_columns(path)
    negative = np.flatnonzero(~(cost >= 0))
    if negative.size:
        row = int(negative[0])
        raise CostInputError(path, row + 2, f"cost {cost[row]!r} is negative or not a number")

    first_day = int(day_numbers.min())
    day_index = day_numbers - first_day
    n_series, n_days = len(unique_ids), int(day_index.max()) + 1
    key = series_index.astype(np.int64) * n_days + day_index
    counts = np.bincount(key, minlength=n_series * n_days)
    if counts.max() > 1:
        rows = np.flatnonzero(counts[key] > 1)
        _, first_seen = np.unique(key[rows], return_index=True)
        second = int(np.setdiff1d(rows, rows[first_seen])[0])
        raise CostInputError(
            path,
            second + 2,
            f"duplicate row for series_id {unique_ids[series_index[second]]!r} on "
            f"{np.datetime64(int(day_numbers[second]), 'D')}",
        )

    costs = np.full((n_series, n_days), np.nan)
    costs[series_index, day_index] = cost
    present = ~np.isnan(costs)
    inside = np.maximum.accumulate(present, axis=1) & np.maximum.accumulate(present[:, ::-1], axis=1)[:, ::-1]
    costs[inside & ~present] = 0.0
    dates = np.arange(n_days) + np.datetime64(first_day, "D")
    return CostMatrix(series_ids=unique_ids, dates=dates, costs=costs)


def _frame(result: ScoreResult, series_ids: npt.NDArray[Any], dates: npt.NDArray[np.datetime64]) -> pd.DataFrame:
    data: dict[str, Any] = {"series_id": series_ids, "date": np.datetime_as_string(dates, unit="D")}
    for f in fields(result):
        if f.name == "dates":
            continue
        values = getattr(result, f.name)
        if f.name == "anomaly":
            values = values.astype(np.int8)
        elif values.dtype.kind == "f":
            values = np.round(values, 4)
        data[f.name] = values
    return pd.DataFrame(data)[list(OUTPUT_COLUMNS)]


def _subset(result: ScoreResult, rows: npt.NDArray[np.intp]) -> dict[str, Any]:
    return {f.name: getattr(result, f.name)[rows] for f in fields(result) if f.name != "dates"}


def _write_atomically(frame: pd.DataFrame, output_path: str | os.PathLike[str]) -> None:
    target = os.path.abspath(os.fspath(output_path))
    fd, tmp = tempfile.mkstemp(prefix=".scores-", suffix=".csv.tmp", dir=os.path.dirname(target))
    os.close(fd)
    try:
        if HAVE_PYARROW:
            pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def score_matrix_latest(matrix: CostMatrix, config: ScoringConfig) -> pd.DataFrame:
    """Score each series on its own latest day (series ended earlier are scored on their last day)."""
    present = ~np.isnan(matrix.costs)
    n_days = matrix.costs.shape[1]
    last_day = n_days - 1 - np.argmax(present[:, ::-1], axis=1)
    frames = []
    for t in np.unique(last_day):
        rows = np.flatnonzero(last_day == t)
        sub = matrix.costs if rows.size == len(last_day) else matrix.costs[rows]
        result = score_day_chunked(sub, matrix.dates, int(t), config)
        frames.append(_frame(result, matrix.series_ids[rows], np.repeat(matrix.dates[t], rows.size)))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def score_csv(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    config: ScoringConfig = ScoringConfig(),
) -> int:
    """Score the latest date of every series in ``input_path``; write ``output_path``; return rows written."""
    matrix = load_cost_matrix(input_path)
    frame = score_matrix_latest(matrix, config)
    _write_atomically(frame, output_path)
    return len(frame)


def backtest_csv(
    input_path: str | os.PathLike[str],
    days: int,
    output_path: str | os.PathLike[str],
    config: ScoringConfig = ScoringConfig(),
) -> int:
    """Replay the daily job for each of the last ``days`` dates of the file, each with only the data up to
    that date; one row per series existing on that date. Returns rows written."""
    if days < 1:
        raise ValueError("days must be >= 1")
    matrix = load_cost_matrix(input_path)
    n_days = matrix.costs.shape[1]
    frames = []
    for t in range(max(0, n_days - days), n_days):
        result = score_day_chunked(matrix.costs, matrix.dates, t, config)
        rows = np.flatnonzero(result.status != STATUS_ABSENT)
        sub = ScoreResult(dates=result.dates, **_subset(result, rows))
        frames.append(_frame(sub, matrix.series_ids[rows], np.repeat(matrix.dates[t], rows.size)))
    frame = pd.concat(frames, ignore_index=True)
    _write_atomically(frame, output_path)
    return len(frame)
