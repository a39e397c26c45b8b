"""The embedded warehouse: migrations once, sessions per unit of work, threads and processes taking turns."""

import subprocess
import sys
import threading

from shared.adapters.warehouse import Warehouse
from shared.settings import load_settings


def _warehouse(tmp_path):
    return Warehouse(load_settings({"WAREHOUSE_PATH": str(tmp_path / "wh")}, local_settings=tmp_path / "none.json"))


def test_migrations_apply_once_and_a_second_run_is_a_no_op(tmp_path):
    wh = _warehouse(tmp_path)
    first = wh.migrate()
    assert "0001_job_runs.sql" in first
    assert wh.migrate() == []
    with wh.session() as s:
        assert s.query("SELECT COUNT(*) AS N FROM VALUEFLOW_MIGRATIONS")[0]["N"] == len(first)


def test_threads_of_one_process_take_turns_on_the_embedded_file(tmp_path):
    # GIVEN the local host's threads (queue pollers, timers, HTTP) sharing one warehouse folder
    wh = _warehouse(tmp_path)
    wh.migrate()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                with wh.session() as s:
                    s.execute(
                        "INSERT INTO JOB_RUNS (JOB, RUN_KEY, STARTED_AT, STATUS) VALUES (%s, %s, CURRENT_TIMESTAMP(), 'ok')",
                        (f"t{n}", str(i)),
                    )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN every write landed and none failed on "already attached"
    assert errors == []
    with wh.session() as s:
        assert s.query("SELECT COUNT(*) AS N FROM JOB_RUNS")[0]["N"] == 20


def test_another_process_waits_for_the_file_lock_instead_of_failing(tmp_path):
    wh = _warehouse(tmp_path)
    wh.migrate()
    script = "\n".join([
        "from shared.adapters.warehouse import Warehouse",
        "from shared.settings import load_settings",
        f"w = Warehouse(load_settings({{'WAREHOUSE_PATH': {str(tmp_path / 'wh')!r}}}))",
        "with w.session() as s:",
        "    print(s.query('SELECT 1 AS OK')[0]['OK'], flush=True)",
    ])  # fmt: skip
    with wh.session():
        # WHEN a CLI process wants the warehouse while this one holds it for a moment
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        threading.Event().wait(1.0)
    out, _ = proc.communicate(timeout=60)
    # THEN it waited and got its answer
    assert proc.returncode == 0 and out.strip() == "1"
