"""The mmfs command line: demo, info and --help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mmfs
from mmfs.cli import main


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rows", "3000", "--queries", "16"]) == 0
    out = capsys.readouterr().out
    assert f"mmfs {mmfs.__version__} demo: exact k-NN over 3,000 x 128 float32 vectors" in out
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
    assert "500 x 8 float32" in out
    assert "3 queries, k=4:" in out
    nearest = out.split("nearest of query 0:")[1].strip().split(", ")
    assert len(nearest) == 4


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
    assert "2,000 x 128 float32 vectors" in res.stdout
    assert "100% of neighbours" in res.stdout
    assert res.stderr == ""
