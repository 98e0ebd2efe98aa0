"""One sweep run with one worker against the same sweep with more: the speed-up, and where the rest goes.

Reads two finished sweep folders of the same config (fresh ones: every model and cell made in that run) and
prints their wall times, the ratio, and for each run the sum of the jobs' own times (models and cells, as each
job timed itself), the workers' idle time (workers x wall time - that sum: waiting for a model that another job
is still making, the tail when fewer jobs are left than workers, Ray's start-up and shutdown) and how much slower
the same jobs ran beside each other (memory bandwidth and caches shared by the cores).

    python benchmarks/sweep_speedup.py bench-out/sweeps/speedup-1 bench-out/sweeps/speedup-2
"""

from __future__ import annotations

import argparse
import json
import pathlib


def jobs(out: pathlib.Path) -> dict[str, float]:
    """Every job's own time in seconds, by key (models and cells)."""
    times = {}
    for kind in ("models", "cells"):
        for result in sorted((out / kind).glob("*/result.json")):
            r = json.loads(result.read_text())
            times[r["key"]] = r["seconds"]
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("one", help="the sweep folder run with --workers 1")
    ap.add_argument("more", help="the same sweep run with more workers")
    args = ap.parse_args()
    runs = {}
    for name in (args.one, args.more):
        out = pathlib.Path(name)
        sweep = json.loads((out / "results.json").read_text())["sweep"]
        runs[name] = {"wall": sweep["wall_seconds"], "workers": sweep["workers"] or 1, "jobs": jobs(out)}
    one, more = runs[args.one], runs[args.more]
    if set(one["jobs"]) != set(more["jobs"]):
        raise SystemExit("the two folders hold different jobs: run the same config into two fresh folders")
    print(f"wall time: {one['wall']:.0f} s with {one['workers']} worker(s), {more['wall']:.0f} s with "
          f"{more['workers']}: {one['wall'] / more['wall']:.2f}x")
    for name, run in runs.items():
        busy = sum(run["jobs"].values())
        idle = run["workers"] * run["wall"] - busy
        print(f"{name}: {len(run['jobs'])} jobs, {busy:.0f} s of job time; workers idle {idle:.0f} s "
              f"({100 * idle / (run['workers'] * run['wall']):.1f}% of {run['workers']} x {run['wall']:.0f} s)")
    slower = sum(more["jobs"].values()) / sum(one["jobs"].values())
    print(f"the same jobs took {slower:.3f}x as long side by side as alone")
    ideal = one["wall"] / more["wall"] * slower
    print(f"without that slow-down the ratio would be {ideal:.2f}x; the rest is idle workers")


if __name__ == "__main__":
    main()
