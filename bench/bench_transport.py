"""CPU per storage request: the table and queue clients on `http.client` (`StdlibTransport`, today)
against azure-core's `RequestsTransport` (before), in the same run, on the same Azurite.

Both drive the same `StateStore` methods the workers call (insert, upsert, point read, queue put,
receive + delete); only the clients' transport differs. Rounds alternate between the two and the
figures are medians over rounds: process CPU per request (what the GIL and the instance's core
pay) and wall time per request, one thread; then requests/s with 8 threads.

    python -m bench.bench_transport [--ops 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._harness import run_threads, table


def _store(conn: str, lean: bool) -> Any:
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.adapters.http import pooled_session
    from shared.adapters.storage import StateStore, _client_options

    session = pooled_session()
    return StateStore(
        TableServiceClient.from_connection_string(conn, **_client_options(session, lean=lean)),
        QueueServiceClient.from_connection_string(conn, **_client_options(session, lean=lean)),
        BlobServiceClient.from_connection_string(conn, **_client_options(session)),
    )


def _operations(store: Any, tag: str) -> dict[str, Callable[[int], None]]:
    table_name, queue_name = f"bench{tag}", f"bench-{tag}"
    store.upsert(table_name, "p", "warm", {"v": 0})
    store.send(queue_name, {"warm": True})

    def receive_and_delete(_: int) -> None:
        for message in store.receive(queue_name, max_messages=1, visibility_timeout=30):
            store.ack(queue_name, message)

    return {
        "table insert": lambda n: store.insert(table_name, "p", f"{uuid.uuid4().hex}", {"n": n, "note": "x" * 64}),
        "table upsert": lambda n: store.upsert(table_name, "p", f"r{n % 50}", {"n": n, "note": "x" * 64}),
        "table point read": lambda n: store.get(table_name, "p", "warm"),
        "queue put": lambda n: store.send(queue_name, {"n": n, "alert": "x" * 200}),
        "queue receive + delete (2 requests)": receive_and_delete,
    }


def _cpu_per_op(op: Callable[[int], None], ops: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(ops):
        op(n)
    return (time.process_time() - cpu) / ops * 1e3, (time.perf_counter() - wall) / ops * 1e3


def _threaded(op: Callable[[int], None], ops: int, threads: int) -> float:
    each = ops // threads

    def run(first: int) -> None:
        for n in range(first, first + each):
            op(n)

    started = time.perf_counter()
    run_threads([functools.partial(run, k * each) for k in range(threads)])
    return each * threads / (time.perf_counter() - started)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=1_000, help="requests per operation kind and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)

    from devhost.azurite import start_azurite

    azurite = start_azurite(Path(tempfile.mkdtemp(prefix="bench-transport-")), free_ports=True, in_memory=True)
    try:
        stores = {"before (RequestsTransport)": _store(azurite.connection_string, lean=False)}
        stores["today (StdlibTransport)"] = _store(azurite.connection_string, lean=True)
        ops = {name: _operations(store, tag) for (name, store), tag in zip(stores.items(), ("a", "b"), strict=True)}
        cpu: dict[tuple[str, str], list[float]] = {}
        wall: dict[tuple[str, str], list[float]] = {}
        rate: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for impl, kinds in ops.items():
                for kind, op in kinds.items():
                    c, w = _cpu_per_op(op, args.ops)
                    cpu.setdefault((impl, kind), []).append(c)
                    wall.setdefault((impl, kind), []).append(w)
                rate.setdefault(impl, []).append(_threaded(kinds["table upsert"], args.ops, args.threads))
    finally:
        azurite.stop()

    impls = list(stores)
    rows = []
    for kind in next(iter(ops.values())):
        before, today = (statistics.median(cpu[(i, kind)]) for i in impls)
        wb, wt = (statistics.median(wall[(i, kind)]) for i in impls)
        rows.append((kind, f"{before:.3f}", f"{today:.3f}", f"{before / today:.2f}x", f"{wb:.3f}", f"{wt:.3f}"))
    print(
        f"\nCPU and wall time per call, one thread, medians of {args.rounds} rounds of {args.ops} calls (Azurite, loopback)\n"
    )
    print(table(rows, ("operation", "CPU ms before", "CPU ms today", "ratio", "wall ms before", "wall ms today")))
    rb, rt = (statistics.median(rate[i]) for i in impls)
    print(f"\ntable upserts/s with {args.threads} threads: before {rb:.0f}, today {rt:.0f} ({rt / rb:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
