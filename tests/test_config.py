"""mmfs.show_config and the one home of thread counts, mmfs.effective_n_threads."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy

import mmfs
from mmfs._config import usable_cpu_count
from mmfs._kernels import _config as kconfig


def test_show_config_prints_and_returns(capsys: pytest.CaptureFixture[str]) -> None:
    info = mmfs.show_config()
    out = capsys.readouterr().out
    for key in ("mmfs", "numpy", "scipy", "openmp", "threads", "build_flags"):
        assert key in info
        assert any(line.split()[0] == key for line in out.splitlines() if line.strip())
    assert info["mmfs"] == mmfs.__version__
    assert info["numpy"] == np.__version__
    assert info["scipy"] == scipy.__version__
    assert info["openmp"] == kconfig.openmp_enabled()
    assert info["threads"] == mmfs.effective_n_threads(None)
    assert isinstance(info["build_flags"], str)
    assert np.__version__ in out


def test_show_config_to_a_file() -> None:
    buf = io.StringIO()
    info = mmfs.show_config(file=buf)
    assert f"{info['numpy']}" in buf.getvalue()
    assert len(buf.getvalue().splitlines()) == len(info)


def test_effective_n_threads() -> None:
    cpus = usable_cpu_count()
    assert cpus >= 1
    if not kconfig.openmp_enabled():  # a serial build reports 1 whatever is asked
        assert mmfs.effective_n_threads(None) == 1
        assert mmfs.effective_n_threads(4) == 1
        return
    assert mmfs.effective_n_threads(1) == 1
    assert mmfs.effective_n_threads(3) == 3
    assert mmfs.effective_n_threads(-1) == cpus
    assert mmfs.effective_n_threads(-2) == max(1, cpus - 1)
    assert mmfs.effective_n_threads(-1000) == 1
    if "OMP_NUM_THREADS" not in os.environ:
        assert mmfs.effective_n_threads(None) == cpus


def test_effective_n_threads_none_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    expected = usable_cpu_count() if kconfig.openmp_enabled() else 1
    assert mmfs.effective_n_threads(None) == expected


@pytest.mark.parametrize("env", ["1", "3"])
def test_omp_num_threads_is_honoured(env: str) -> None:
    """OpenMP reads OMP_NUM_THREADS once, at start-up: test it in a fresh interpreter."""
    code = (
        "import io, json, mmfs\n"
        "from mmfs._kernels import _config as k\n"
        "print(json.dumps([mmfs.effective_n_threads(None), k.omp_max_threads(),"
        " k.openmp_enabled(), mmfs.show_config(file=io.StringIO())['threads']]))\n"
    )
    environ = dict(os.environ, OMP_NUM_THREADS=env)
    res = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    n, omp_max, openmp, shown = json.loads(res.stdout.strip().splitlines()[-1])
    if openmp:
        assert omp_max == int(env)
        assert n == omp_max
    else:
        assert n == 1
    assert shown == n
