"""Ratio tables from pytest-benchmark JSON files written by the mmfs benchmarks.

    uv run --no-sync python tools/bench_report.py /tmp/cdist.json /tmp/knn.json ...

Prints one markdown table per file: for each group (one comparison), every implementation's
time (median and min, full-size equivalent: peers timed on a slice of rows are extrapolated
exactly as benchmarks/conftest.py does), the speedup ``peer time / mmfs time`` from the
median and from the min, the issue's target and PASS/FAIL (judged on the median), and the
peak memory recorded next to the time.  On a shared, loaded machine the min is the better
estimate of the uncontended cost; both are shown so that neither is hidden.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from targets import TARGETS, fmt_seconds


def _full(bench: dict[str, Any], stat: str) -> float:
    """The stat, extrapolated to the full row count for peers timed on a slice."""
    t = float(bench["stats"][stat])
    info = bench.get("extra_info", {})
    if "slice_rows" in info:
        fixed = float(info["fixed_s"])
        t = fixed + max(0.0, t - fixed) * info["full_rows"] / info["slice_rows"]
    return t


def _default_target(group: str, impl: str) -> str | None:
    """The target of a peer in files written before extra_info carried it."""
    if impl == "scipy" and group.startswith("cdist"):
        return "3x"
    if impl == "sklearn":
        return "as_fast"
    if impl == "floor":
        return "floor"
    if impl == "faiss" and " 1 query " in group:
        return "faster"
    return None


def _mib(x: Any) -> str:
    return "" if x is None else f"{x / 2**20:.0f}"


def table(doc: dict[str, Any]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in doc["benchmarks"]:
        groups.setdefault(bench["group"], []).append(bench)
    lines = [
        "| group | impl | median | min | rounds | speedup (median) | speedup (min) "
        "| target | result | peak RSS MiB | traced MiB |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    n_pass = n_fail = 0
    for group, benches in groups.items():
        by_impl = {b["extra_info"].get("impl", b["name"]): b for b in benches}
        ref = by_impl.get("mmfs")
        for impl, b in sorted(by_impl.items(), key=lambda kv: kv[0] == "mmfs"):
            med, mn = _full(b, "median"), _full(b, "min")
            s_med = s_min = target = verdict = ""
            if impl != "mmfs" and ref is not None:
                r_med = med / _full(ref, "median")
                r_min = mn / _full(ref, "min")
                s_med, s_min = f"{r_med:.2f}", f"{r_min:.2f}"
                key = b["extra_info"].get("target") or _default_target(group, impl)
                if key in TARGETS:
                    minimum, target = TARGETS[key].minimum, TARGETS[key].text
                    ok = r_med >= minimum
                    verdict = "PASS" if ok else "FAIL"
                    n_pass += ok
                    n_fail += not ok
            info = b["extra_info"]
            lines.append(
                f"| {group} | {impl} | {fmt_seconds(med)} | {fmt_seconds(mn)} "
                f"| {b['stats']['rounds']} "
                f"| {s_med} | {s_min} | {target} | {verdict} "
                f"| {_mib(info.get('peak_rss_bytes'))} | {_mib(info.get('peak_traced_bytes'))} |"
            )
    lines.append("")
    lines.append(f"targets (on the median): {n_pass} PASS, {n_fail} FAIL")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ratio tables from mmfs benchmark JSON files.")
    parser.add_argument("json", nargs="+", help="files written by --benchmark-json")
    args = parser.parse_args(argv)
    for path in args.json:
        with open(path) as f:
            doc = json.load(f)
        print(f"<!-- {path}: {doc.get('datetime', '')} -->")
        print("\n".join(table(doc)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
