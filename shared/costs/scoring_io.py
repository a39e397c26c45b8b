"""CSV contract of the operator CLI: ``series_id,date,cost`` in, one scored row per series (and date) out.

``score_csv`` scores the latest date of each series with all its earlier days; ``backtest_csv`` replays
the daily job for each of the last N dates. A day without a row between a series's first and last row
costs 0; before its first and after its last row the series did not exist. Bad input raises
:class:`CostInputError` naming the file and the line; the output file is written atomically, so nothing
is left behind on error.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import functools
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from shared.costs.scoring import (
    LABELS,
    STATUS_ABSENT,
    STATUSES,
    Progress,
    ScoreResult,
    ScoringConfig,
    score_day_chunked,
    score_days_stream,
)

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
    "history_days",
    "seasonality",
    "noise",
)

if TYPE_CHECKING:
    import pandas as pd

HAVE_PYARROW = True  # the typed fast read; tests force the pandas reader by clearing it


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
    summed_rows: int = 0  # rows that repeated a series-day (several meters) and were added into it


# Arrow <-> numpy by buffers: ``pa.array`` and ``to_numpy`` import pandas on first use (a fifth of a second of
# every run); these fixed-width, null-free columns need none of it


def _numpy_of(array: Any, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """The values of a null-free fixed-width Arrow array (a read-only view of its buffer)."""
    width = np.dtype(dtype).itemsize
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * width)


def _arrow_of(values: npt.NDArray[Any]) -> Any:
    """A numpy int, bool or float array as an Arrow array over the same memory; a float NaN is a null."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:  # bit-packed in Arrow
        return pa.Array.from_buffers(
            pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))]
        )
    validity = None
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        if missing.any():
            validity = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    kind = pa.from_numpy_dtype(values.dtype)
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(values)])


def _arrow_strings(words: Sequence[str]) -> Any:
    """A list of str as an Arrow string array."""
    encoded = [w.encode("utf-8") for w in words]
    ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)
    kind, offset_type = (pa.string(), np.int32) if not ends.size or ends[-1] < 2**31 else (pa.large_string(), np.int64)
    offsets = np.zeros(len(encoded) + 1, dtype=offset_type)
    offsets[1:] = ends
    return pa.Array.from_buffers(kind, len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


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
                    # ids dictionary-encoded as they are parsed: millions of id strings are never materialised
                    column_types={
                        "series_id": pa.dictionary(pa.int32(), pa.string()),
                        "date": pa.date32(),
                        "cost": pa.float64(),
                    },
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
        # one dictionary for all chunks (ids in order of first appearance), indices into it
        encoded = table.unify_dictionaries().column("series_id")
        series_index = np.concatenate([_numpy_of(c.indices, np.int32) for c in encoded.chunks])
        unique_ids = np.asarray(encoded.chunks[0].dictionary.to_pylist(), dtype=object)
        day_numbers = np.concatenate([_numpy_of(c, np.int32) for c in dates.cast(pa.int32()).chunks])
        return series_index, unique_ids, day_numbers, np.concatenate([_numpy_of(c, np.float64) for c in cost.chunks])
    import pandas as pd  # the fallback and the error diagnosis only: its import costs a fifth of a second

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
    import pandas as pd

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
    import pandas as pd

    frame = pd.read_csv(path, usecols=list(REQUIRED_COLUMNS), dtype=str, keep_default_na=False, na_values=[])
    _validate_frame(path, frame)
    raise CostInputError(path, None, f"unreadable CSV: {hint}")


def load_cost_matrix(path: str | os.PathLike[str]) -> CostMatrix:
    """Read a ``series_id,date,cost`` CSV into a dense matrix; validates as it goes."""
    _check_header(path)
    series_index, unique_ids, day_numbers, cost = _read_columns(path)
    not_number = np.flatnonzero(~np.isfinite(cost))
    if not_number.size:
        row = int(not_number[0])
        raise CostInputError(path, row + 2, f"cost {float(cost[row])} is not a number")

    first_day = int(day_numbers.min())
    day_index = day_numbers - first_day
    n_series, n_days = len(unique_ids), int(day_index.max()) + 1
    key = series_index.astype(np.int64)
    key *= n_days
    key += day_index
    flat = np.full(n_series * n_days, np.nan)
    flat[key] = cost
    summed_rows = len(key) - int(np.count_nonzero(~np.isnan(flat)))
    if summed_rows:
        # real exports have several meters per resource-day: their costs add up to the series-day
        counts = np.bincount(key, minlength=flat.size)
        flat = np.where(counts > 0, np.bincount(key, weights=cost, minlength=flat.size), np.nan)
    costs = flat.reshape(n_series, n_days)
    negative = np.flatnonzero(costs.reshape(-1) < 0)
    if negative.size:
        cell = int(negative[0])
        series, day = divmod(cell, n_days)
        row = int(np.flatnonzero(key == cell)[0])
        summed = " (after adding its rows)" if summed_rows and np.count_nonzero(key == cell) > 1 else ""
        raise CostInputError(
            path,
            row + 2,
            f"series {unique_ids[series]!r} costs {float(costs.reshape(-1)[cell]):,.2f} on "
            f"{np.datetime64(first_day + day, 'D')}{summed}: a negative day is a refund or correction, not usage; "
            "keep usage rows only, or net the corrections into their day",
        )
    present = ~np.isnan(costs)

    inside = np.maximum.accumulate(present, axis=1) & np.maximum.accumulate(present[:, ::-1], axis=1)[:, ::-1]
    costs[inside & ~present] = 0.0
    dates = np.arange(n_days) + np.datetime64(first_day, "D")
    return CostMatrix(series_ids=unique_ids, dates=dates, costs=costs, summed_rows=summed_rows)


def _factorize(values: npt.NDArray[Any]) -> tuple[npt.NDArray[np.intp], npt.NDArray[Any]]:
    import pandas as pd  # the label-string path only (the CLI writes label codes)

    codes, uniques = pd.factorize(values)
    return codes, uniques


def _strings(values: npt.NDArray[Any]) -> Any:
    """A dictionary-encoded Arrow array of a numpy unicode array (few distinct values: reasons, statuses).

    Hashes each fixed-width string as integers and factorises the hashes - ``np.unique`` on unicode sorts
    strings and takes seconds on millions of rows; a collision (checked) falls back to a plain array."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind != "U" or values.size == 0:
        return pa.array(values.tolist() if values.dtype.kind == "O" else values)
    width = values.dtype.itemsize // 4
    chars = values.view(np.uint32).reshape(-1, width).astype(np.uint64)
    weights = (np.uint64(1_000_003) ** np.arange(width, dtype=np.uint64)).astype(np.uint64)
    codes, uniques = _factorize(chars @ weights)
    first = np.zeros(len(uniques), dtype=np.intp)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    words = values[first]
    if not np.array_equal(words[codes], values):
        return pa.array(values)
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(words.tolist()))


@functools.lru_cache(maxsize=1)
def _label_dictionaries() -> dict[str, Any]:
    return {name: _arrow_strings(vocabulary) for name, vocabulary in LABELS.items()}


def _id_dictionary(series_ids: npt.NDArray[Any]) -> Any:
    return _arrow_strings([str(s) for s in series_ids])


def _date_dictionary(dates: npt.NDArray[np.datetime64]) -> Any:
    return _arrow_strings(np.datetime_as_string(dates, unit="D").tolist())


def _table(
    columns: dict[str, npt.NDArray[Any]],
    series_index: npt.NDArray[np.intp],
    series_ids: Any,
    date_index: npt.NDArray[np.intp],
    dates: Any,
) -> Any:
    """The output table in ``OUTPUT_COLUMNS`` order: ids and dates dictionary-encoded (``series_ids`` and
    ``dates`` are the numpy arrays, or their Arrow dictionaries made once by the caller), floats rounded to
    4 places with NaN written empty."""
    id_words = series_ids if isinstance(series_ids, pa.Array) else _id_dictionary(series_ids)
    date_words = dates if isinstance(dates, pa.Array) else _date_dictionary(dates)
    arrays: dict[str, Any] = {
        "series_id": pa.DictionaryArray.from_arrays(_arrow_of(series_index.astype(np.int32)), id_words),
        "date": pa.DictionaryArray.from_arrays(_arrow_of(date_index.astype(np.int32)), date_words),
    }
    for name in OUTPUT_COLUMNS[2:]:
        values = columns[name]
        if name == "anomaly":
            arrays[name] = _arrow_of(values.astype(np.int8))
        elif values.dtype.kind == "f":
            arrays[name] = _arrow_of(np.round(values, 4))
        elif name in LABELS and values.dtype.kind == "i":  # codes into the label vocabulary
            arrays[name] = pa.DictionaryArray.from_arrays(_arrow_of(values), _label_dictionaries()[name])
        elif values.dtype.kind in "iub":
            arrays[name] = _arrow_of(values)
        else:
            arrays[name] = _strings(values)
    return pa.Table.from_arrays(list(arrays.values()), names=list(arrays))


def _columns(result: ScoreResult) -> dict[str, npt.NDArray[Any]]:
    return {f.name: getattr(result, f.name) for f in fields(result) if f.name != "dates"}


# rows formatted per task: big enough that a task's overhead is nothing, small enough that the text of a few
# of them stays in the cache (one 3 M-row buffer was measured to cost a second of page faults)
_SLICE_ROWS = 100_000


class _CsvSink:
    """Appends Arrow tables to a binary file as CSV, in the order given, the header once: the same bytes as
    one ``write_csv`` of all their rows. Slices are formatted on a thread pool (Arrow formats without the
    GIL, so this overlaps with the caller's work) and written in order, a few in flight at most."""

    def __init__(self, out: BinaryIO, threads: int = 0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._out = out
        # half the cores by default: the scoring threads take the others, and a second formatting thread on 2
        # cores only added switching (backtest 20,000 x 180: ~0.25 s less CPU and ~0.15 s less wall with one)
        self._threads = threads or max(1, (os.cpu_count() or 1) // 2)
        self._pool = ThreadPoolExecutor(max_workers=self._threads)
        self._pending: collections.deque[Any] = collections.deque()
        self._header = True

    def put(self, table: Any) -> None:
        if table.num_rows == 0 and not self._header:
            return  # nothing to write: the header went with an earlier table
        for start in range(0, max(table.num_rows, 1), _SLICE_ROWS):
            piece = table.slice(start, _SLICE_ROWS)
            self._pending.append(self._pool.submit(_render, piece, self._header))
            self._header = False
            while self._pending and (self._pending[0].done() or len(self._pending) > 2 * self._threads):
                self._out.write(memoryview(self._pending.popleft().result()))

    def close(self) -> None:
        try:
            while self._pending:
                self._out.write(memoryview(self._pending.popleft().result()))
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)


def _render(table: Any, header: bool) -> Any:
    sink = pa.BufferOutputStream()
    # Arrow formats column by column in batches: 32k rows a batch instead of 1k cost 15 % less (same bytes)
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=header, batch_size=32_768))
    return sink.getvalue()


@contextlib.contextmanager
def _atomic_output(output_path: str | os.PathLike[str]) -> Iterator[_CsvSink]:
    """A :class:`_CsvSink` on a temporary file next to ``output_path``, moved over it only once complete."""
    target = os.path.abspath(os.fspath(output_path))
    fd, tmp = tempfile.mkstemp(prefix=".scores-", suffix=".csv.tmp", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _CsvSink(out)
            try:
                yield sink
            finally:
                sink.close()
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_atomically(table: Any, output_path: str | os.PathLike[str]) -> None:
    with _atomic_output(output_path) as sink:
        sink.put(table)


def score_matrix_latest(matrix: CostMatrix, config: ScoringConfig) -> Any:
    """Score each series on its own latest day (series ended earlier are scored on their last day); returns
    the output table (Arrow)."""
    present = ~np.isnan(matrix.costs)
    n_series, n_days = matrix.costs.shape
    last_day = n_days - 1 - np.argmax(present[:, ::-1], axis=1)
    parts: list[dict[str, npt.NDArray[Any]]] = []
    rows_of: list[npt.NDArray[np.intp]] = []
    for t in np.unique(last_day):
        rows = np.flatnonzero(last_day == t)
        sub = matrix.costs if rows.size == n_series else matrix.costs[rows]
        parts.append(_columns(score_day_chunked(sub, matrix.dates, int(t), config, labels=False)))
        rows_of.append(rows)
    rows = np.concatenate(rows_of)
    columns = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    return _table(columns, rows, matrix.series_ids, last_day[rows], matrix.dates)


def _note_summed(matrix: CostMatrix, notes: list[str] | None) -> None:
    if matrix.summed_rows and notes is not None:
        notes.append(
            f"{matrix.summed_rows} row(s) repeated a series and date (several meters per resource-day): "
            "their costs were summed into one series-day"
        )


def score_csv(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    config: ScoringConfig = ScoringConfig(),
    notes: list[str] | None = None,
) -> int:
    """Score the latest date of every series in ``input_path``; write ``output_path``; return rows written.
    ``notes`` receives what a person should know about the input (rows summed into one series-day)."""
    matrix = load_cost_matrix(input_path)
    _note_summed(matrix, notes)
    table = score_matrix_latest(matrix, config)
    _write_atomically(table, output_path)
    return int(table.num_rows)


def backtest_csv(
    input_path: str | os.PathLike[str],
    days: int,
    output_path: str | os.PathLike[str],
    config: ScoringConfig = ScoringConfig(),
    progress: Progress | None = None,
    notes: list[str] | None = None,
) -> int:
    """Replay the daily job for each of the last ``days`` dates of the file, each with only the data up to
    that date; one row per series existing on that date. Returns rows written. The rolling medians are
    computed once and shared by every replayed day; ``progress(done, total)`` follows the scoring."""
    if days < 1:
        raise ValueError("days must be >= 1")
    matrix = load_cost_matrix(input_path)
    _note_summed(matrix, notes)
    n_days = matrix.costs.shape[1]
    replayed = list(range(max(0, n_days - days), n_days))
    stream = score_days_stream(matrix.costs, matrix.dates, replayed, config, progress=progress, labels=False)
    id_words, date_words = _id_dictionary(matrix.series_ids), _date_dictionary(matrix.dates)
    absent = np.int8(STATUSES.index(STATUS_ABSENT))
    rows_written = 0
    with contextlib.closing(stream), _atomic_output(output_path) as sink:
        # date by date, as the daily job would have written them; absent series-days left out. Each day is
        # formatted while the next ones are scored
        for t, parts in zip(replayed, stream, strict=True):
            columns, series_index = _present_rows(parts, absent)
            table = _table(columns, series_index, id_words, np.full(series_index.size, t), date_words)
            sink.put(table)
            rows_written += int(table.num_rows)
    return rows_written


def _present_rows(
    parts: list[ScoreResult], absent: np.int8
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.intp]]:
    """(the columns of the blocks' rows, top block first, whose status is not ``absent``; those rows' series
    indexes)."""
    pieces: list[dict[str, npt.NDArray[Any]]] = []
    indexes = []
    start = 0
    for part in parts:
        size = part.status.shape[0]
        rows = np.flatnonzero(part.status != absent)
        whole = rows.size == size
        pieces.append({name: (v if whole else v[rows]) for name, v in _columns(part).items()})
        indexes.append(rows + start)
        start += size
    if len(pieces) == 1:
        return pieces[0], indexes[0]
    columns = {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
    return columns, np.concatenate(indexes)
