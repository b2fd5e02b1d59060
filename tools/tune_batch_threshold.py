"""Where a batch read starts to gain from threads: the kernel of ``group.get`` on one
thread against all threads, for batch sizes around the threshold.

    uv run --no-sync python tools/tune_batch_threshold.py [--keys 1000000] [--repeat 30]

Builds a store of ``--keys`` keys (8 float32 scalars + one dense(128) float32, as the
batch benchmarks), then for each batch size times the fused read kernel
(``RowTable.get_int``) on fresh random keys every call, each thread count in turn, and
prints the median per-key cost and the speed-up of every thread count over one.
``group.get`` goes parallel from the size where the speed-up is clearly above 1 (see
``_threads`` in src/mmfs/group.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import numpy as np

import mmfs
from mmfs._config import usable_cpu_count

SIZES = [1024, 2048, 4096, 8192, 12288, 16384, 32768, 65536]


def main() -> None:
    parser = argparse.ArgumentParser(description="Where a batch read starts to gain from threads")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    threads = sorted({1, usable_cpu_count()})
    rng = np.random.default_rng(0)
    keys = rng.permutation(args.keys).astype(np.int64) * 7919
    schema: dict[str, Any] = {f"s{j}": mmfs.scalar() for j in range(8)}
    schema["emb"] = mmfs.dense(128)
    with tempfile.TemporaryDirectory() as tmp:
        store = mmfs.open(tmp, durability="none")
        g = store.create_group("g", key="id", schema=schema)
        for a in range(0, args.keys, 100_000):
            b = min(args.keys, a + 100_000)
            values = {f"s{j}": rng.standard_normal(b - a, dtype=np.float32) for j in range(8)}
            values["emb"] = rng.standard_normal((b - a, 128), dtype=np.float32)
            g.write(keys[a:b], values)
        store.commit()
        snap = store._snapshot("g")
        plan = snap.plan(None)
        print(f"{'keys':>7} " + " ".join(f"{t:>2} thr ns/key" for t in threads) + "  speed-up")
        for n in SIZES:
            times: dict[int, list[float]] = {t: [] for t in threads}
            out = np.empty(n * plan.row_bytes, dtype=np.uint8)
            rows = np.empty(n, dtype=np.int64)
            for _ in range(args.repeat):
                for t in threads:  # fresh keys for every call: none is served from cache
                    q = keys[rng.integers(0, args.keys, n)]
                    t0 = time.perf_counter()
                    snap.table.get_int(q, rows, plan.fields, out, t)
                    times[t].append(time.perf_counter() - t0)
            med = {t: statistics.median(v) / n * 1e9 for t, v in times.items()}
            cols = " ".join(f"{med[t]:>13.1f}" for t in threads)
            print(f"{n:>7} {cols}  {med[1] / med[threads[-1]]:8.2f}x")
        store.close()


if __name__ == "__main__":
    main()
