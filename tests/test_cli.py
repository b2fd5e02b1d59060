"""The mmfs command line: demo, info and --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmfs
from mmfs.cli import main


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rows", "3000", "--queries", "16"]) == 0
    out = capsys.readouterr().out
    assert f"mmfs {mmfs.__version__} demo: a feature store of 3,000 users, 128-d embeddings" in out
    assert "wrote 3,000 users (8 float32 + 128-d embedding + category)" in out
    assert "commit -> generation 1" in out
    assert "a reader saw nothing before the commit: True" in out
    assert "saw it after, without reopening: True" in out
    assert "online read, one key (8 scalars + 128-d): median" in out
    assert "values exact: True" in out
    assert "batch read, 10,000 keys:" in out
    assert "(10000, 136) float32 matrix" in out
    assert "mask=[True, False]" in out
    assert "[batch] many keys in one call" in out
    assert "get(3,000 keys):" in out
    assert "identical: True" in out
    assert "iter_batches over all 3,000 users: 3,000 rows" in out
    assert "equal to scoring in this process: True" in out
    assert "[transforms] fitted once" in out
    assert "equal to numpy's (x - mean) / std: True" in out
    assert "(137 columns): identical: True" in out
    assert "serving refused with TransformSkewError: True" in out
    assert "[experiments] deterministic arms" in out
    assert "coverage 20% -> 95%: 0 assigned keys moved" in out
    assert "10.0% of keys changed arm (the minimum is 10%)" in out
    assert "treatment served scale@2: True" in out
    assert "[similarity search] an LSH index" in out
    assert "built 256-bit codes for 3,000 rows" in out
    assert "recall@10 against exact search: 1.000" in out
    assert "found at commit: True" in out
    assert "does not have it: True" in out
    assert "no longer found, version " in out
    assert "still finds it: True" in out
    assert "every answer among them: True" in out
    assert "exact k-NN over the 3,000 x 128 embeddings" in out
    assert "one query, k=10:" in out
    assert "16 queries, k=10:" in out
    assert "agrees with numpy brute force: 100% of neighbours" in out
    for metric in ("cosine", "cityblock", "inner_product"):
        assert f"{metric}: 16 queries in" in out
    assert "cdist 500 x 3000:" in out
    assert "dtype float32" in out
    assert "nearest of query 0:" in out


def test_demo_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rows", "500", "--dim", "8", "--queries", "3", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "500 x 8 embeddings" in out
    assert "3 queries, k=4:" in out
    nearest = out.split("nearest of query 0:")[1].strip().split(", ")
    assert len(nearest) == 4


def test_demo_keeps_a_store_at_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "demo.mmfs"
    assert main(["demo", "--rows", "400", "--dim", "4", "--queries", "2", "--path", str(path)]) == 0
    capsys.readouterr()
    with mmfs.open(path, mode="r") as store:
        users = store["users"]
        assert len(users) == 400  # the similarity-search part writes one user, deletes it
        assert users.features[-2:] == ["embedding", "country"]
        assert store.verify() == {"users": 401}
        assert users.indexes()["embedding"].kind == "lsh"


def test_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("mmfs", "numpy", "scipy", "openmp", "threads", "build_flags"):
        assert key in out


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out
    assert "info" in out


def test_missing_or_bad_command_exits_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["demo", "--rows", "many"])
    assert info.value.code == 2
    capsys.readouterr()


def test_python_dash_m(tmp_path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mmfs.cli", "demo", "--rows", "2000", "--queries", "8"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert res.returncode == 0, res.stderr
    assert "a feature store of 2,000 users, 128-d embeddings" in res.stdout
    assert "100% of neighbours" in res.stdout
    assert res.stderr == ""


def test_info_describes_and_verifies_a_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "s"
    with mmfs.open(path) as store:
        g = store.create_group("items", key="sku", key_type="str", schema={"v": mmfs.dense(3)})
        g.write(["a", "b"], {"v": [[1, 2, 3], [4, 5, 6]]})
        store.experiments.create_layer("L")
        store.experiments.create("ab", {"c": 50, "t": 50}, coverage=0.2, layer="L")
        store.commit()
        g.create_index("v", "lsh", "cosine", bits=128)
        store.commit()
    assert main(["info", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "experiment 'ab' (running, phase 0): c 50%, t 50%, coverage 20% in layer 'L'" in out
    assert "generation 2" in out
    assert "group 'items': key 'sku' (str), 2 keys, 2 rows of 32 bytes" in out
    assert "v: dense (dim=3, dtype=float32)" in out
    assert "index on v: lsh (cosine, 128 bits, 1,024 buckets (table: 0 rows))" in out
    assert "verified: every file and every key of 2 keys" in out
    with mmfs.open(path) as store:
        store["items"].create_index("v", "lsh", "cosine", bits=128, tables=2)
        store.commit()
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "index on v: lsh (cosine, 128 bits, 2 tables of 1,024 buckets (tables: 0 rows))" in out
    assert main(["info", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mmfs info: error: ")
    assert "is not an mmfs store" in err
