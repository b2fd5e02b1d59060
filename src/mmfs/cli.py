"""The ``mmfs`` command line.

mmfs demo [--rows N] [--dim D] [--queries Q] [--k K] [--path P]
                                                       the tour, on an embedded store
mmfs info [PATH [--verify]]                            build and thread configuration,
                                                       or what a store holds
mmfs --help
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[Any, float]:
    """Best wall time of `repeat` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def _disk_bytes(path: str) -> int:
    """Bytes a directory tree really takes (allocated blocks: segments are sparse files)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total


def _tour_store(path: str, data: np.ndarray, rng: np.random.Generator) -> bool:
    """Part 1: the store.  Returns whether every check passed."""
    import mmfs

    n, dim = data.shape
    print(f"\n[store] {path}")
    scalars = {f"s{i}": rng.standard_normal(n).astype(np.float32) for i in range(8)}
    countries = np.array(["de", "fr", "us", "jp", "br"])[rng.integers(0, 5, n)]
    t0 = time.perf_counter()
    with mmfs.open(path, durability="none") as store:
        users = store.create_group(
            "users", key="user_id",
            schema={**{name: mmfs.scalar("float32") for name in scalars},
                    "embedding": mmfs.dense(dim), "country": mmfs.category()},
        )  # fmt: skip
        keys = rng.permutation(10 * n)[:n].astype(np.int64)
        users.write(keys, {**scalars, "embedding": data, "country": countries.tolist()})
        pending = mmfs.open(path, mode="r")
        invisible = "users" not in pending.groups()
        gen = store.commit("daily load")
        t_load = time.perf_counter() - t0
        visible = pending["users"].get(int(keys[0])).found[0]
        pending.close()
        raw = n * (dim + 8) * 4
        print(
            f"  wrote {n:,} users (8 float32 + {dim}-d embedding + category), commit -> "
            f"generation {gen} in {t_load:.2f} s"
        )
        print(
            f"  a reader saw nothing before the commit: {invisible}; saw it after, without "
            f"reopening: {visible}"
        )
        print(f"  on disk {_disk_bytes(path) / raw:.2f}x the raw float32 bytes")

    ok = invisible and visible
    with mmfs.open(path, mode="r") as reader:  # what a serving process does
        users = reader["users"]
        feats = [*scalars, "embedding"]
        probe = keys[rng.integers(0, n, 2000)].tolist()
        times, row = [], np.zeros((1, 0), np.float32)
        for k in probe:
            t = time.perf_counter()
            row = users.get(k, feats).to_numpy()
            times.append(time.perf_counter() - t)
        med = statistics.median(times) * 1e6
        i = int(np.flatnonzero(keys == probe[-1])[0])
        expect = np.r_[[scalars[f"s{j}"][i] for j in range(8)], data[i]].astype(np.float32)
        ok &= bool(np.array_equal(row[0], expect))
        print(
            f"  online read, one key (8 scalars + {dim}-d): median {med:.1f} us per call, "
            f"values exact: {np.array_equal(row[0], expect)}"
        )
        batch_keys = keys[rng.integers(0, n, 10_000)]
        batch, t_batch = _timed(lambda: users.get(batch_keys, feats))
        X = batch.to_numpy()
        print(f"  batch read, 10,000 keys: {t_batch * 1e3:.2f} ms -> a {X.shape} {X.dtype} matrix")
        missing = users.get([-1, int(keys[1])])
        print(
            f"  a missing key is masked, not an error: mask={missing.mask.tolist()}, "
            f"country={missing['country'].tolist()}"
        )
        ok &= missing.mask.tolist() == [True, False]
    return ok


def _demo_score(batch: Any) -> np.ndarray:
    """The demo's model: the sum of a user's scalars (module level, so workers import it)."""
    return batch.to_numpy()[:, :8].sum(axis=1)


def _tour_batch(path: str, rng: np.random.Generator) -> bool:
    """Part 2: batch retrieval and multi-process scoring over the store of part 1.
    Returns whether every check passed."""
    import mmfs

    print("\n[batch] many keys in one call, streaming, scoring workers")
    with mmfs.open(path, mode="r") as reader:
        users = reader["users"]
        keys = np.asarray(users.keys())
        n = keys.shape[0]
        feats = [f"s{i}" for i in range(8)] + ["embedding"]
        pos = rng.integers(0, n, min(n, 200_000))
        q = keys[pos]
        data = users.get(keys, feats).to_numpy().copy()  # the numpy floor: positions known
        _, t_floor = _timed(lambda: data[pos])
        one, t_one = _timed(lambda: users.get(q, feats, n_threads=1).to_numpy())
        allc, t_all = _timed(lambda: users.get(q, feats).to_numpy())
        same = np.array_equal(one, allc) and np.array_equal(one, data[pos])
        print(
            f"  get({len(q):,} keys): {t_one * 1e3:.1f} ms on 1 thread, {t_all * 1e3:.1f} ms on "
            f"{mmfs.effective_n_threads()}; numpy data[pos] with positions known "
            f"{t_floor * 1e3:.1f} ms; identical: {same}"
        )
        seen = 0
        t = time.perf_counter()
        for part in users.iter_batches(batch_size=65_536, features=feats):
            seen += len(part)
        print(f"  iter_batches over all {n:,} users: {seen:,} rows in "
              f"{time.perf_counter() - t:.2f} s")  # fmt: skip
        with mmfs.Scorer(path, "users", _demo_score, feats, workers=2) as scorer:
            _, t_first = _timed(lambda: scorer.score(q[:1000]), repeat=1)  # workers start
            got, t_score = _timed(lambda: scorer.score(q))
        want = _demo_score(users.get(q, feats))
        scored = bool(np.array_equal(got, want))
        print(
            f"  mmfs.Scorer, 2 worker processes: {len(q):,} keys in {t_score * 1e3:.0f} ms "
            f"(after {t_first:.1f} s to start them); equal to scoring in this process: {scored}"
        )
    return same and seen == n and scored


def _tour_transforms(path: str, rng: np.random.Generator) -> bool:
    """Part 3: fitted, versioned transforms applied during reads, identical in a training
    set and online, and a custom transform whose edited code is refused.  Returns whether
    every check passed."""
    import mmfs
    from mmfs import transforms as T

    print("\n[transforms] fitted once, served by the read kernel, the same everywhere")
    feats = ["s0", "s1", "s2", "s3", "embedding"]
    with mmfs.open(path, durability="none") as store:
        users = store["users"]
        t = time.perf_counter()
        scale = store.transforms.fit("scale", "users", feats, T.StandardScaler())
        store.transforms.fit("country", "users", ["country"], T.OneHotEncoder())
        store.commit("fit the preprocessing")  # publishes the pins: "scale" means scale@1
        width = scale.transform.n_features_in
        print(f"  fitted scale@1 (StandardScaler, {width} columns) and country@1 "
              f"(OneHotEncoder) on every user: {time.perf_counter() - t:.2f} s")  # fmt: skip
        keys = np.asarray(users.keys())
        q = keys[rng.integers(0, keys.shape[0], min(keys.shape[0], 10_000))]
        raw, t_raw = _timed(lambda: users.get(q, feats).to_numpy(), repeat=5)
        got, t_tr = _timed(lambda: users.get(q, transform="scale").to_numpy(), repeat=5)
        everything = users.get(keys, feats).to_numpy().astype(np.float64)
        want = (raw - everything.mean(axis=0)) / everything.std(axis=0)
        close = bool(np.allclose(got, want, rtol=1e-5, atol=1e-5))
        print(f"  get({len(q):,} keys, transform='scale'): {t_tr * 1e3:.2f} ms vs "
              f"{t_raw * 1e3:.2f} ms raw ({t_tr / t_raw:.2f}x); equal to numpy's "
              f"(x - mean) / std: {close}")  # fmt: skip
        t0 = np.datetime64("2100-01-01", "ns")
        m = min(1000, len(q))
        entity = {"user_id": q[:m], "event_time": np.full(m, t0)}
        ts = store.training_set(entity, [], transform=["scale", "country"])
        online = users.get(q[:m], transform=["scale", "country"])
        same = bool(np.array_equal(ts.to_numpy(), online.to_numpy()))
        print(f"  training set and online read of {m:,} users, scaled and one-hot "
              f"({online.to_numpy().shape[1]} columns): identical: {same}")  # fmt: skip

        def ctr(s0: np.ndarray, s1: np.ndarray) -> np.ndarray:
            return s0 / (1.0 + np.abs(s1))

        mmfs.transform("ctr", "1")(ctr)
        store.transforms.fit("ctr", "users", ["s0", "s1"], ctr)
        store.commit("add ctr")
        served = users.get(q[:5], transform="ctr")["ctr"]

        def ctr_edited(s0: np.ndarray, s1: np.ndarray) -> np.ndarray:
            return s0 / (2.0 + np.abs(s1))  # changed after the model was trained

        mmfs.transform("ctr", "1")(ctr_edited)
        try:
            users.get(q[:5], transform="ctr")
            refused = False
        except mmfs.TransformSkewError:
            refused = True
        T.unregister_transform("ctr", "1")
        print(f"  custom transform ctr@1 served ({served[0]:.3f}, ...); after its code was "
              f"edited, serving refused with TransformSkewError: {refused}")  # fmt: skip
    return close and same and refused


def _tour_experiments(path: str, rng: np.random.Generator) -> bool:
    """Part 4: deterministic assignment, ramps that move no one, and each arm served its
    own transform version in one read.  Returns whether every check passed."""
    import mmfs

    print("\n[experiments] deterministic arms, stable ramps, variants served in one read")
    with mmfs.open(path, durability="none") as store:
        users = store["users"]
        cat = store.experiments
        feats = ["s0", "s1", "s2", "s3", "embedding"]
        store.transforms.fit("scale", "users", feats, mmfs.transforms.MinMaxScaler(), pin=False)
        cat.create_layer("ranking", holdout=0.05)
        exp = cat.create(
            "scaler_test", {"control": 50, "treatment": 50}, layer="ranking", coverage=0.2,
            unit="user_id", serve={"treatment": {"transforms": {"scale": "scale@2"}}},
            log_exposures=True,
        )  # fmt: skip
        ids = np.arange(2_000_000, dtype=np.int64)
        _, t_int = _timed(lambda: exp.assign(ids, n_threads=1))
        names = np.char.add("user-", ids[:500_000].astype(str))
        _, t_str = _timed(lambda: exp.assign(names, n_threads=1))
        print(f"  assign on 1 thread: {len(ids) / t_int / 1e6:.0f} M int64 ids/s, "
              f"{len(names) / t_str / 1e6:.0f} M strings/s")  # fmt: skip
        before = exp.assign(ids)
        ramped = cat.update("scaler_test", coverage=0.95).assign(ids)
        moved = int(np.count_nonzero(ramped[before >= 0] != before[before >= 0]))
        reweighted = cat.update("scaler_test", variants={"control": 40, "treatment": 60})
        after = reweighted.assign(ids)
        both = (ramped >= 0) & (after >= 0)
        share = float(np.mean(after[both] != ramped[both]))
        print(f"  coverage 20% -> 95%: {moved} assigned keys moved; weights 50/50 -> 40/60: "
              f"{share:.1%} of keys changed arm (the minimum is 10%)")  # fmt: skip
        store.commit("start scaler_test")
        keys = np.asarray(users.keys())
        q = keys[rng.integers(0, keys.shape[0], min(keys.shape[0], 10_000))]
        plain, t_plain = _timed(lambda: users.get(q, transform="scale"), repeat=5)
        batch, t_exp = _timed(
            lambda: users.get(q, transform="scale", experiment="scaler_test"), repeat=5
        )
        arms = batch.arms
        assert arms is not None
        treated = arms == 1
        want = np.where(
            treated[:, None],
            users.get(q, transform="scale@2").to_numpy(),
            plain.to_numpy(),
        )
        served = bool(np.array_equal(batch.to_numpy(), want))
        counts = np.bincount(arms[arms >= 0], minlength=2)
        srm = mmfs.experiments.srm_test(counts, [40, 60])
        logged = len(cat.exposures("scaler_test")["key"])
        print(f"  get({len(q):,} keys, experiment=): {t_exp * 1e3:.2f} ms vs {t_plain * 1e3:.2f} "
              f"ms plain; treatment served scale@2: {served}; split {counts.tolist()} "
              f"(SRM p={srm.pvalue:.2f}); {logged:,} exposures logged")  # fmt: skip
        cat.log.close()
    return moved == 0 and abs(share - 0.1) < 0.005 and served and not srm.mismatch


def _tour_versions(path: str, rng: np.random.Generator) -> bool:
    """Part 4: versions, event time and a point-in-time training set.  Returns whether
    every check passed."""
    import mmfs

    print("\n[versions] daily loads, late data, a pinned training set")
    day = np.timedelta64(1, "D")
    t0 = np.datetime64("2026-11-01", "ns")
    with mmfs.open(path, durability="none") as store:
        g = store.create_group(
            "activity", key="user_id", schema={"clicks_7d": mmfs.scalar("float32")}
        )
        n = 200_000
        users = np.arange(n)
        history: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        t = time.perf_counter()
        for d in range(10):  # ten daily loads, each touching 10% of the users
            who = rng.choice(users, n // 10, replace=False)
            clicks = rng.poisson(5 + d, who.shape[0]).astype(np.float32)
            g.write(who, {"clicks_7d": clicks}, event_time=t0 + d * day)
            history.append((who, np.full(who.shape[0], d), clicks))
            store.commit(f"day {d}", tags=["v1"] if d == 9 else None)
        print(f"  10 daily commits of {n // 10:,} rows: {time.perf_counter() - t:.2f} s")
        entity = {
            "user_id": rng.integers(0, n + 1000, 100_000),  # a few users never seen
            "event_time": t0 + rng.integers(0, 12 * 86400, 100_000) * np.timedelta64(1, "s"),
        }
        feats = ["activity.clicks_7d"]
        ts, t_ts = _timed(lambda: store.training_set(entity, feats, version="v1", ttl=7 * day))
        print(f"  training set, 100,000 entity rows x 200,000 history rows: {t_ts * 1e3:.1f} ms")
        # the reference: for each entity row, the latest day <= its time within 7 days
        who = np.concatenate([h[0] for h in history])
        days = np.concatenate([h[1] for h in history])
        vals = np.concatenate([h[2] for h in history])
        sample = rng.integers(0, 100_000, 300)
        ok = True
        for i in sample.tolist():
            tq = entity["event_time"][i]
            hit = np.flatnonzero((who == entity["user_id"][i]) & (t0 + days * day <= tq))
            hit = hit[t0 + days[hit] * day >= tq - 7 * day]
            want = vals[hit[np.argmax(days[hit])]] if hit.shape[0] else np.nan
            got = ts["activity.clicks_7d"][i]
            ok &= bool(got == want or (np.isnan(got) and np.isnan(want)))
        missing = float(ts.mask.mean())
        print(f"  equal to a brute-force point-in-time join (300 rows): {ok}; {missing:.0%} "
              "of rows have no value inside the 7-day ttl, and are kept (masked)")  # fmt: skip
        before = ts.to_numpy().tobytes()
        late = np.arange(1000)  # late-arriving corrections with old event times
        g.write(late, {"clicks_7d": np.full(1000, 999.0, np.float32)}, event_time=t0 + 2 * day)
        store.commit("late data")
        again = store.training_set(entity, feats, version="v1", ttl=7 * day).to_numpy()
        newest = store.training_set(entity, feats, ttl=7 * day).to_numpy()
        same = again.tobytes() == before
        moved = not np.array_equal(newest, again, equal_nan=True)
        print(f"  after late data: the pinned set is byte-identical: {same}; the newest "
              f"one changed: {moved}")  # fmt: skip
        one, t_v = _timed(lambda: g.get(7, version="v1", as_of=t0 + 5 * day), repeat=200)
        print(f"  one key as of day 5 at version v1: {t_v * 1e6:.1f} us "
              f"(found: {one.found[0]})")  # fmt: skip
        out = store.gc(keep=1)
        print(f"  gc(keep=1): dropped {len(out['dropped'])} versions; kept "
              f"{[v.id for v in store.versions()]} (the tagged one and the newest)")  # fmt: skip
        ok &= same and moved
    return ok


def _tour_index(path: str, queries: np.ndarray, k: int) -> bool:
    """Part 6: an LSH index over the users' embeddings, built beside them in the store:
    recall and latency against exact search, new rows indexed at commit, a delete, a
    version searched as it was, a filter.  Returns whether every check passed."""
    import mmfs
    from mmfs.index.lsh import table_block

    print("\n[similarity search] an LSH index over the embeddings, versioned with them")
    with mmfs.open(path, durability="none") as store:
        users = store["users"]
        _, t_build = _timed(lambda: users.create_index("embedding", "lsh", "euclidean"), repeat=1)
        v_index = store.commit("index the embeddings")
        n, idx = len(users), users.indexes()["embedding"]
        size = 32 * idx.n_rows + (
            4 * idx.tables * table_block(idx.table_bits, idx.table_rows) if idx.table_rows else 0
        )
        print(f"  built 256-bit codes for {n:,} rows and a table of {2**idx.table_bits:,} buckets "
              f"in {t_build:.2f} s ({size / 2**20:.1f} MiB beside the rows)")  # fmt: skip
        ev = users.evaluate_index("embedding", queries, k)
        print(f"  recall@{k} against exact search: {ev['recall']:.3f}; per query on one "
              f"thread {ev['index_ms_per_query']:.2f} ms (exact: "
              f"{ev['exact_ms_per_query']:.2f} ms)")  # fmt: skip
        new_key = int(np.max(users.keys())) + 1
        fresh = queries[:1] + 3.0
        users.write([new_key], {**_user_values(users, 1), "embedding": fresh})
        store.commit("one new user")
        found, dist = users.search("embedding", fresh[0], k=1)
        before, _ = users.search("embedding", fresh[0], k=1, version=v_index)
        print(f"  a user written after the index is found at commit: {found[0] == new_key} "
              f"(distance {dist[0]:.1f}); version {v_index} does not have it: "
              f"{before[0] != new_key}")  # fmt: skip
        v_found = store.generation
        users.delete([new_key])
        v_gone = store.commit("the new user deleted")
        after, _ = users.search("embedding", fresh[0], k=1)
        kept_before, _ = users.search("embedding", fresh[0], k=1, version=v_found)
        gone = after[0] != new_key and kept_before[0] == new_key
        print(f"  deleted at version {v_gone}: no longer found, version {v_found} still finds "
              f"it: {gone}")  # fmt: skip
        allowed = users.keys()[::2]
        kept, _ = users.search("embedding", queries[:8], k=k, filter=allowed)
        in_filter = bool(np.isin(kept, allowed).all())
        print(f"  filter= half of the users: every answer among them: {in_filter}")
    return bool(ev["recall"] >= 0.9 and found[0] == new_key and before[0] != new_key) and (
        in_filter and gone
    )


def _user_values(users: Any, n: int) -> dict[str, Any]:
    """Values of every feature of the users group for n new rows (zeros)."""
    out: dict[str, Any] = {}
    for name, ftype in users.schema.items():
        desc = ftype.to_json()
        if desc["type"] == "scalar":
            out[name] = np.zeros(n, dtype=desc["dtype"])
        elif desc["type"] == "dense":
            out[name] = np.zeros((n, desc["dim"]), dtype=np.float32)
        else:
            out[name] = [None] * n  # a category: no value
    return out


def _demo(args: argparse.Namespace) -> int:
    import mmfs

    rng = np.random.default_rng(args.seed)
    n, dim, nq, k = args.rows, args.dim, args.queries, args.k
    print(f"mmfs {mmfs.__version__} demo: a feature store of {n:,} users, {dim}-d embeddings")
    t0 = time.perf_counter()
    centres = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)
    data = centres[rng.integers(0, len(centres), n)]
    data += 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    queries = data[rng.integers(0, n, nq)] + 0.1 * rng.standard_normal((nq, dim)).astype(np.float32)
    print(f"  generated {data.nbytes / 2**20:.0f} MiB in {time.perf_counter() - t0:.2f} s")

    with tempfile.TemporaryDirectory(prefix="mmfs-demo-") as tmp:
        path = args.path or os.path.join(tmp, "features.mmfs")
        store_ok = _tour_store(path, data, rng)
        store_ok &= _tour_batch(path, rng)
        store_ok &= _tour_transforms(path, rng)
        store_ok &= _tour_experiments(path, rng)
        store_ok &= _tour_index(path, queries, k)
        store_ok &= _tour_versions(os.path.join(tmp, "versions.mmfs"), rng)

    print(f"\n[vectors] exact k-NN over the {n:,} x {dim} embeddings")
    _, t_one = _timed(lambda: mmfs.knn(data, queries[:1], k))
    print(f"  one query, k={k}: {t_one * 1e3:.2f} ms ({data.nbytes / t_one / 1e9:.1f} GB/s)")

    (idx, dist), t_batch = _timed(lambda: mmfs.knn(data, queries, k))
    print(f"  {nq} queries, k={k}: {t_batch * 1e3:.1f} ms ({nq / t_batch:,.0f} queries/s)")

    # Check against a brute-force numpy answer on a few queries.
    check = min(nq, 8)
    diff = queries[:check, None, :].astype(np.float64) - data[None, :, :].astype(np.float64)
    ref = np.sqrt(np.einsum("qnd,qnd->qn", diff, diff))
    ref_idx = np.argsort(ref, axis=1, kind="stable")[:, :k]
    agree = float(np.mean(idx[:check] == ref_idx))
    err = float(np.max(np.abs(dist[:check] - np.take_along_axis(ref, ref_idx, axis=1))))
    print(f"  agrees with numpy brute force: {agree:.0%} of neighbours, max |d err| {err:.1e}")

    for metric in ("cosine", "cityblock", "inner_product"):
        (_, d), t = _timed(lambda m=metric: mmfs.knn(data, queries, k, metric=m), repeat=1)
        print(f"  {metric:>13}: {nq} queries in {t * 1e3:.1f} ms, nearest d={d[0, 0]:.4f}")

    a, b = data[:500], data[: min(n, 20_000)]
    D, t = _timed(lambda: mmfs.cdist(a, b, "euclidean"))
    print(f"  cdist {a.shape[0]} x {b.shape[0]}: {t * 1e3:.1f} ms, dtype {D.dtype}")
    pairs = zip(idx[0], dist[0], strict=True)
    print("  nearest of query 0:", ", ".join(f"{i}:{d:.3f}" for i, d in pairs))
    return 0 if agree == 1.0 and store_ok else 1


def _info(args: argparse.Namespace) -> int:
    import mmfs

    if args.path is None:
        mmfs.show_config()
        return 0
    with mmfs.open(args.path, mode="r") as store:
        desc = store.describe()
        print(
            f"store {desc['path']}: generation {desc['generation']}, "
            f"{_disk_bytes(desc['path']) / 2**20:.1f} MiB on disk"
        )
        for name, g in desc["groups"].items():
            print(
                f"  group {name!r}: key {g['key']!r} ({g['key_type']}), {g['keys']:,} keys, "
                f"{g['rows']:,} rows of {g['record_bytes']} bytes"
            )
            for fname, ftype in g["features"].items():
                detail = ", ".join(f"{k}={v}" for k, v in ftype.items() if k != "type")
                print(f"    {fname}: {ftype['type']}" + (f" ({detail})" if detail else ""))
            for fname, idx in store[name].indexes().items():
                bits = f", {idx.bits} bits" if idx.kind == "lsh" else ""
                if idx.table_bits:
                    buckets, what = f"{2**idx.table_bits:,} buckets", "table"
                    if idx.tables > 1:
                        buckets, what = f"{idx.tables} tables of {buckets}", "tables"
                    bits += f", {buckets} ({what}: {idx.table_rows:,} rows)"
                print(f"    index on {fname}: {idx.kind} ({idx.metric}{bits})")
        for name in store.experiments.list():
            e = store.experiments.get(name)
            split = ", ".join(f"{v} {w:g}%" for v, w in e.weights.items())
            where = f" in layer {e.layer!r}" if e.layer else ""
            print(f"  experiment {name!r} ({e.status}, phase {e.phase}): {split}, "
                  f"coverage {e.coverage:.0%}{where}")  # fmt: skip
        if args.verify:
            checked = store.verify()
            print(f"  verified: every file and every key of {sum(checked.values()):,} keys")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmfs", description="mmfs: an embedded, memory-mapped feature database for ML"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the tour on generated data (a few seconds)")
    demo.add_argument("--rows", type=int, default=200_000, help="data rows (default 200,000)")
    demo.add_argument("--dim", type=int, default=128, help="dimensions (default 128)")
    demo.add_argument("--queries", type=int, default=256, help="queries (default 256)")
    demo.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--path", default=None, help="store directory (default: a temporary one, removed after)"
    )
    demo.set_defaults(func=_demo)
    info = sub.add_parser(
        "info", help="print versions and thread configuration, or describe a store"
    )
    info.add_argument("path", nargs="?", default=None, help="a store to describe")
    info.add_argument("--verify", action="store_true", help="check every file of the store")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mmfs.errors import MmfsError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MmfsError as exc:  # our errors say what to do: show the message, not a traceback
        print(f"mmfs {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
