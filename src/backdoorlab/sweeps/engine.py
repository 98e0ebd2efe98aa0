"""Run a sweep's grid on Ray: on a local Ray instance started for it, or on a cluster it joins.

Each job (a model to make, a cell to measure) is one Ray task running :func:`.cells.run_job`; the driver here
only decides what is ready (a cell waits for its models), keeps at most ``workers`` tasks in flight and collects
the results. Ray does the scheduling, and retries a task whose worker process died (``max_retries``); a task
that raises nothing but fails (a bad option) is reported, not retried. Everything a job makes lands in ``OUT``
under its content key, so a sweep that stops (killed, interrupted, a machine lost) is resumed by the same
command: finished jobs are read back, the rest run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pathlib
import shutil
import signal
import threading
import time

from ..errors import BackdoorlabError
from ..io import atomic_write_json, atomic_write_text
from ..machine import machine
from .cells import CELLS, MODELS, finished, run_job
from .config import SweepConfig
from .grid import Job, plan
from .rows import PENDING, result_row

TASK_RETRIES = 3  # a task whose worker process dies is run again this many times
PARTIAL_EVERY = 30.0  # seconds between two writes of the partial results while a sweep runs
WAIT_SECONDS = 1.0  # how long the driver waits for a job at a time


def run_sweep(config: SweepConfig, out: str | os.PathLike, *, address: str | None = None, workers: int | None = None,
              threads: int = 1, gpus: float = 0.0, data_dir: str | None = None, progress: bool = True,
              command: str | None = None) -> dict:
    """Run (or resume) the grid of ``config`` into ``out``; returns ``{"sweep": ..., "rows": [...]}``, what
    ``results.json`` holds.

    ``address``: a Ray cluster to join ("auto", "HOST:PORT"); None starts a local Ray instance with
    ``workers * threads`` CPUs. ``workers``: the most jobs in flight at once (default: as many as the CPUs allow).
    ``threads``: torch threads (and Ray CPUs) per job. ``gpus``: the GPU share each job asks Ray for (0: CPU;
    0.5 runs two jobs per GPU)."""
    if workers is not None and workers < 1:
        raise BackdoorlabError(f"--workers must be >= 1, got {workers}")
    if threads < 1:
        raise BackdoorlabError(f"--threads-per-task must be >= 1, got {threads}")
    if gpus < 0:
        raise BackdoorlabError(f"--gpus-per-task must be >= 0, got {gpus}")
    models, cells = plan(config)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tick = time.time()
    with _only_sweep_in(out_dir):
        _forget_unfinished(out_dir)
        atomic_write_text(out_dir / "sweep.toml", config.text)
        atomic_write_json(out_dir / "plan.json", {
            "config": config.path, "models": {k: j.recipe for k, j in models.items()},
            "cells": [{"key": c.key, "labels": c.labels, "recipe": c.recipe} for c in cells]})
        from .report import write_results
        results = {job.key: done for job in [*models.values(), *cells]
                   if (done := finished(str(out_dir), job.kind, job.key)) is not None}
        made_before = len(results)  # by an earlier run of the same grid, resumed here

        def write(results: dict, complete: bool) -> dict:
            rows = [result_row(c, results.get(c.key, PENDING)) for c in cells]
            sweep = {"name": config.name, "config": config.path,
                     "command": command or f"backdoorlab sweep {config.path}", "machine": machine(),
                     "wall_seconds": round(time.time() - tick, 1), "complete": complete, "jobs": len(models) + len(cells),
                     "jobs_made_before": made_before, "workers": workers,
                     "threads_per_task": threads, "address": address, "models": len(models), "cells": len(cells)}
            write_results(out_dir, rows, sweep)
            return {"sweep": sweep, "rows": rows}

        _schedule(models, cells, results, str(out_dir), address, workers, threads, gpus, data_dir, progress,
                  partial=lambda results: write(results, complete=False))
        _forget_unfinished(out_dir)  # what a killed worker's attempt left before Ray ran the job again
        return write(results, complete=True)


@contextlib.contextmanager
def _only_sweep_in(out_dir: pathlib.Path):
    """Refuse a second sweep writing into the same folder while this one runs."""
    with open(out_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackdoorlabError(f"another sweep is writing into {out_dir}; wait for it or choose another --out") \
                from None
        yield


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While jobs run, SIGTERM (a batch scheduler's stop, `kill`) and SIGINT (which a shell's background job
    ignores) stop the sweep as Ctrl-C does: KeyboardInterrupt, so Ray is shut down and what finished stays for the
    resume. Set after ``ray.init``, whose own SIGTERM handler aborts the process; restored afterwards. Only in
    the main thread, where Python allows signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _forget_unfinished(out_dir: pathlib.Path) -> None:
    """Delete what jobs of an earlier, stopped run left half-made (their temporary folders)."""
    for sub in (MODELS, CELLS):
        for tmp in (out_dir / sub).glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def _ray():
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        import ray
    except ImportError:
        raise BackdoorlabError("backdoorlab sweep runs on Ray, which is not installed: "
                               "pip install 'backdoorlab[distributed]'") from None
    return ray


def _schedule(models: dict[str, Job], cells: list[Job], results: dict[str, dict], out: str, address, workers,
              threads, gpus, data_dir, progress: bool, partial) -> None:
    """Run every job not in ``results`` (the finished ones, by key), each once its models are made, adding its
    result there. ``partial(results)`` is called with the results so far at most every :data:`PARTIAL_EVERY`
    seconds."""
    from tqdm.auto import tqdm
    todo = [job for job in [*models.values(), *cells] if job.key not in results]
    bar = tqdm(total=len(models) + len(cells), initial=len(results), desc="sweep", unit="job", disable=not progress,
               dynamic_ncols=True)
    if todo:
        ray = _ray()
        started = not ray.is_initialized()
        if started:
            # "local": a new instance even when `ray start` left one running here (which address=None would join)
            local = {} if address else {"num_cpus": (workers or max(1, (os.cpu_count() or 1) // threads)) * threads}
            ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, **local)
        cap = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        task = ray.remote(run_job).options(num_cpus=threads, num_gpus=gpus, max_retries=TASK_RETRIES,
                                           retry_exceptions=False)
        try:
            with _terminate_as_interrupt():
                _drain(ray, task, todo, results, out, data_dir, threads, cap, bar, partial)
        finally:
            if started:
                ray.shutdown()
    bar.close()


def _drain(ray, task, todo: list[Job], results: dict, out: str, data_dir, threads: int, cap: int, bar,
           partial) -> None:
    """Submit ready jobs (models first, then cells, each in grid order), at most ``cap`` in flight, until none
    is left; a job whose model failed fails without running."""
    in_flight: dict = {}
    waiting = list(todo)
    failed = 0
    written = time.time()
    while waiting or in_flight:
        for job in list(waiting):
            if len(in_flight) >= cap:
                break
            needed = [results.get(k) for k in job.needs]
            if any(r is None for r in needed):
                continue  # a model it needs is still being made
            waiting.remove(job)
            broken = next((r for r in needed if r["status"] != "ok"), None)
            if broken is not None:
                results[job.key] = _failed(job, f"its model could not be made: {broken['error']}", seconds=0.0)
                failed += 1
                bar.update(1)
                continue
            ref = task.remote(job.kind, job.key, job.recipe, out, data_dir, threads)
            in_flight[ref] = job
        if not in_flight:
            if waiting:  # cannot happen with a plan whose models come before their cells
                raise BackdoorlabError("sweep: jobs wait for models that no job makes")
            break
        # a short timeout: ray.wait blocks signals until it returns, and Ctrl-C must stop a sweep of long jobs
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=WAIT_SECONDS)
        for ref in done:
            job = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the task's worker died more often than Ray retries
                result = _failed(job, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", seconds=None)
            results[job.key] = result
            failed += result["status"] != "ok"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
        if time.time() - written >= PARTIAL_EVERY and (waiting or in_flight):
            partial(results)
            written = time.time()


def _failed(job: Job, error: str, seconds: float | None) -> dict:
    """The result of a job that never ran to the end in a worker (its model failed, or its worker kept dying)."""
    return {"status": "failed", "key": job.key, "kind": job.kind, "recipe": job.recipe, "error": error,
            "seconds": seconds, "machine": None}
