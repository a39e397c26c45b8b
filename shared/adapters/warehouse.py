"""The warehouse adapter: Snowflake in Azure, fakesnow over DuckDB files locally.

Both speak Snowflake SQL through the same DB-API surface of `snowflake-connector-python`. A
connection is opened per unit of work (`with warehouse.session() as wh:`) and closed after: DuckDB
lets one process hold a database file for writing, so keeping it open would lock out the CLI.

Schema migrations are the `*.sql` files of `shared/migrations/`, applied in name order once each
and recorded in `VALUEFLOW_MIGRATIONS`; `migrate()` is idempotent and runs at start. Write every
statement so that running it twice is harmless (`IF NOT EXISTS`): DDL commits on its own.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.errors import WarehouseError
from shared.settings import Settings

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
LOCK_RETRY_SECONDS = 15.0


class WarehouseSession:
    """One open connection: run statements, read rows as dicts, bulk-load DataFrames."""

    def __init__(self, conn: Any, write_pandas: Any) -> None:
        self._conn = conn
        self._write_pandas = write_pandas

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> int:
        """Run one statement; returns the row count the driver reports (or -1)."""
        try:
            cur = self._conn.cursor()
            cur.execute(sql, params)
            return int(cur.rowcount if cur.rowcount is not None else -1)
        except Exception as exc:
            raise WarehouseError(f"warehouse statement failed: {_first_line(exc)}") from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._conn.cursor().executemany(sql, rows)
        except Exception as exc:
            raise WarehouseError(f"warehouse statement failed: {_first_line(exc)}") from exc

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts keyed by upper-case column name (Snowflake's default case)."""
        try:
            cur = self._conn.cursor()
            cur.execute(sql, params)
            names = [d[0].upper() for d in cur.description or []]
            return [dict(zip(names, row, strict=False)) for row in cur.fetchall()]
        except Exception as exc:
            raise WarehouseError(f"warehouse query failed: {_first_line(exc)}") from exc

    def query_frame(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        categorical: Sequence[str] = (),
    ) -> Any:
        """A pandas DataFrame of the result (columns upper-case), fetched columnar: never a Python object per cell.

        Snowflake hands the result over as Arrow batches (`fetch_arrow_batches`), the embedded warehouse as one
        Arrow table; `categorical` columns (repeated ids) become pandas categoricals, one string per distinct value.
        """
        import pandas as pd

        frames = [_arrow_to_pandas(batch, categorical) for batch in self.query_arrow_batches(sql, params)]
        frames = [f for f in frames if len(f.columns)]
        if not frames:
            return pd.DataFrame()
        if len(frames) == 1:
            return frames[0]
        from pandas.api.types import union_categoricals

        out = pd.concat(frames, ignore_index=True)
        for column in categorical:
            if column in out and not isinstance(out[column].dtype, pd.CategoricalDtype):
                out[column] = pd.Series(
                    union_categoricals([f[column] for f in frames], ignore_order=True), index=out.index
                )
        return out

    def query_arrow_batches(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Iterator[Any]:
        """The result as pyarrow RecordBatches/Tables (columns upper-case), as the driver streams them."""
        try:
            cur = self._conn.cursor()
            cur.execute(sql, params)
            names = [d[0].upper() for d in cur.description or []]
            # snowflake-connector-python streams Arrow batches; fakesnow keeps the result as one Arrow table
            batches = cur.fetch_arrow_batches() if hasattr(cur, "fetch_arrow_batches") else [_arrow_table(cur)]
            for batch in batches:
                if batch is not None:
                    yield batch.rename_columns(names) if len(names) == batch.num_columns else batch
        except WarehouseError:
            raise
        except Exception as exc:
            raise WarehouseError(f"warehouse query failed: {_first_line(exc)}") from exc

    def write_frame(self, frame: Any, table: str) -> int:
        """Append a DataFrame or an Arrow table to an existing table (columns must be the table's, upper-case)."""
        if frame is None or len(frame) == 0:
            return 0
        duck = getattr(self._conn, "_duck_conn", None)
        is_arrow = hasattr(frame, "column_names")
        if duck is not None and (is_arrow or not any(isinstance(v, (dict, list)) for v in frame.iloc[0].tolist())):
            # embedded: DuckDB scans the DataFrame itself (fakesnow's write_pandas visits every cell in Python)
            columns = ", ".join(str(c) for c in (frame.column_names if is_arrow else frame.columns))
            try:
                duck.register("_valueflow_frame", frame)
                try:
                    duck.execute(f"INSERT INTO {table.upper()} ({columns}) SELECT {columns} FROM _valueflow_frame")
                finally:
                    duck.unregister("_valueflow_frame")
            except Exception as exc:
                raise WarehouseError(f"bulk load into {table} failed: {_first_line(exc)}") from exc
            return len(frame)
        if is_arrow:
            frame = frame.to_pandas(date_as_object=True)  # snowflake's write_pandas takes pandas
        try:
            ok, _chunks, nrows, _ = self._write_pandas(self._conn, frame, table.upper(), quote_identifiers=False)
        except Exception as exc:
            raise WarehouseError(f"bulk load into {table} failed: {_first_line(exc)}") from exc
        if not ok:
            raise WarehouseError(f"bulk load into {table} reported failure")
        return int(nrows)

    def begin(self) -> None:
        self.execute("BEGIN")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        try:
            self._conn.cursor().execute("ROLLBACK")
        except Exception:  # rollback after a failed statement must never mask the first error
            log.debug("rollback failed", exc_info=True)

    @contextmanager
    def transaction(self) -> Iterator[WarehouseSession]:
        """All-or-nothing: commit when the block ends, roll back when it raises."""
        self.begin()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()


class Warehouse:
    """Opens warehouse sessions from the settings; `embedded` or `snowflake`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def kind(self) -> str:
        return self.settings.warehouse

    def describe(self) -> str:
        if self.kind == "embedded":
            return f"embedded (fakesnow/DuckDB in {self.settings.warehouse_path})"
        return f"snowflake account {self.settings.snowflake_account} db {self.settings.snowflake_database}"

    @contextmanager
    def session(self) -> Iterator[WarehouseSession]:
        if self.kind == "embedded":
            with self._embedded() as sess:
                yield sess
        else:
            with self._snowflake() as sess:
                yield sess

    @contextmanager
    def _embedded(self) -> Iterator[WarehouseSession]:
        path = Path(self.settings.warehouse_path)
        # DuckDB lets one database instance of a process attach a file: threads of the local host
        # (queue pollers, timers, HTTP) take turns; other processes are waited for on the file lock
        with _process_lock(path), self._embedded_session(path) as sess:
            yield sess

    @contextmanager
    def _embedded_session(self, path: Path) -> Iterator[WarehouseSession]:
        from fakesnow.fakes import write_pandas
        from fakesnow.instance import FakeSnow

        path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        while True:
            fs = FakeSnow(db_path=str(path))
            try:
                conn = fs.connect(database=self.settings.snowflake_database, schema=self.settings.snowflake_schema)
                break
            except Exception as exc:
                fs.duck_conn.close()
                if "lock" not in str(exc).lower():
                    raise WarehouseError(f"cannot open the embedded warehouse in {path}: {_first_line(exc)}") from exc
                if time.monotonic() > deadline:
                    raise WarehouseError(
                        f"the embedded warehouse in {path} is locked by another process "
                        f"(a running job or `make run`?); tried for {LOCK_RETRY_SECONDS:.0f}s"
                    ) from exc
                time.sleep(0.25)
        # the embedded engine spills to disk past this (a big GROUP BY must not grow the process without bound)
        fs.duck_conn.execute(f"SET memory_limit = '{int(self.settings.warehouse_embedded_memory_mb)}MB'")
        try:
            yield WarehouseSession(conn, write_pandas)
        finally:
            try:
                conn.close()
            finally:
                fs.duck_conn.close()

    @contextmanager
    def _snowflake(self) -> Iterator[WarehouseSession]:
        import snowflake.connector
        from snowflake.connector.pandas_tools import write_pandas

        s = self.settings
        kwargs: dict[str, Any] = {
            "account": s.snowflake_account,
            "user": s.snowflake_user,
            "database": s.snowflake_database,
            "schema": s.snowflake_schema,
            "client_session_keep_alive": False,
            "application": "ValueFlow",
        }
        if s.snowflake_role:
            kwargs["role"] = s.snowflake_role
        if s.snowflake_warehouse:
            kwargs["warehouse"] = s.snowflake_warehouse
        if s.snowflake_private_key:
            kwargs["private_key"] = _der_private_key(s.snowflake_private_key)
        else:
            kwargs["password"] = s.snowflake_password
        try:
            conn = snowflake.connector.connect(**kwargs)
        except Exception as exc:
            # the connector's messages name the account and user, never the secret
            raise WarehouseError(f"cannot connect to Snowflake: {_first_line(exc)}") from exc
        try:
            yield WarehouseSession(conn, write_pandas)
        finally:
            conn.close()

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; returns the names applied now."""
        applied_now: list[str] = []
        with self.session() as wh:
            wh.execute(
                "CREATE TABLE IF NOT EXISTS VALUEFLOW_MIGRATIONS "
                "(NAME VARCHAR NOT NULL, APPLIED_AT TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP())"
            )
            done = {r["NAME"] for r in wh.query("SELECT NAME FROM VALUEFLOW_MIGRATIONS")}
            for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
                if path.name in done:
                    continue
                # DDL commits on its own in Snowflake: statements must be idempotent (IF NOT EXISTS)
                for statement in split_sql(path.read_text(encoding="utf-8")):
                    wh.execute(statement)
                wh.execute("INSERT INTO VALUEFLOW_MIGRATIONS (NAME) VALUES (%s)", (path.name,))
                applied_now.append(path.name)
                log.info("warehouse migration applied", extra={"migration": path.name})
        return applied_now

    def ping(self) -> str:
        with self.session() as wh:
            rows = wh.query("SELECT 1 AS OK")
        return "ok" if rows and rows[0].get("OK") == 1 else "unexpected answer"


def _arrow_table(cur: Any) -> Any:
    import pyarrow as pa

    table = getattr(cur, "_arrow_table", None)  # fakesnow's result, without a copy per row
    if table is None:
        frame = cur.fetch_pandas_all()
        table = pa.Table.from_pandas(frame, preserve_index=False)
    return table


def _arrow_to_pandas(batch: Any, categorical: Sequence[str]) -> Any:
    import pyarrow as pa

    columns = []
    for name in batch.column_names:
        column = batch.column(name)
        if name in categorical and not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        elif pa.types.is_decimal(column.type):
            column = column.cast(pa.float64())
        columns.append(column)
    table = pa.table(columns, names=batch.column_names) if batch.num_columns else pa.table({})
    return table.to_pandas(date_as_object=True)


_process_locks: dict[str, threading.RLock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(path: Path) -> threading.RLock:
    key = str(path.resolve())
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.RLock())


def split_sql(text: str) -> list[str]:
    """Statements of a migration file: split on `;` at line ends, `--` comments dropped."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _der_private_key(pem: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(pem.replace("\\n", "\n").encode(), password=None)
    except Exception as exc:
        raise WarehouseError("SNOWFLAKE_PRIVATE_KEY is not an unencrypted PEM private key") from exc
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
