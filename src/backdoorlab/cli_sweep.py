"""The ``backdoorlab sweep`` command: an attack x defense grid from a TOML file, run on Ray (see
:mod:`backdoorlab.sweeps`). ``register(cli_group)`` adds it to the ``backdoorlab`` group."""

from __future__ import annotations

import shlex
import sys

import click


@click.command("sweep")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: the content-keyed models and cells, results.csv/json/md and index.html. The "
                   "same command resumes an interrupted sweep; a changed config reuses every model it still needs.")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Join this Ray cluster (auto: the one `ray start` runs here) instead of starting a local Ray "
                   "instance.")
@click.option("--workers", default=None, type=int,
              help="Most jobs at once (default: the CPUs of the local instance or cluster / threads per task).")
@click.option("--threads-per-task", "threads", default=1, show_default=True, type=int,
              help="Torch threads (and Ray CPUs) each job takes.")
@click.option("--gpus-per-task", "gpus", default=0.0, show_default=True, type=float,
              help="GPU share each job asks Ray for (0: CPU only; 0.5: two jobs per GPU).")
@click.option("--dry-run", is_flag=True, help="Check the config and print the plan (what is cached, what runs); "
                                              "run nothing.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Data directory on every worker (default: $BACKDOORLAB_DATA, else a per-user cache directory).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def sweep(config, out, address, workers, threads, gpus, dry_run, data_dir, no_progress):
    """Run the attack x defense grid of CONFIG (TOML; docs/sweeps.md, benchmarks/sweeps/) as Ray tasks.

    Every suspect is trained once (models are cached by the hash of their recipe) and each cell runs the same
    code as `backdoorlab train / attack / repair / scan / detect-poison`. Writes OUT/results.csv, results.json,
    results.md and index.html (a sortable table, one figure per data set, a page per cell). The whole config is
    checked before any work; a cell that fails is reported with its error and the rest of the grid goes on.
    """
    from .sweeps import load_sweep_config, plan, run_sweep
    from .sweeps.cells import finished
    cfg = load_sweep_config(config, data_dir)
    models, cells = plan(cfg)
    if dry_run:
        cached = sum(finished(out, "model", k) is not None for k in models)
        done = {c.key for c in cells if finished(out, c.kind, c.key) is not None}
        click.echo(f"{cfg.name}: {len(models)} models ({cached} made), {len(cells)} cells ({len(done)} done) "
                   f"-> {out}")
        for c in cells:
            state = "done" if c.key in done else "to run"
            click.echo(f"  {c.key}  {c.labels['dataset']:<14} {c.labels['arch']:<12} {c.labels['attack']:<20} "
                       f"seed {c.labels['seed']:<3} {c.labels['defense']:<28} {state}")
        return
    command = "backdoorlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["sweep"] else None
    result = run_sweep(cfg, out, address=address, workers=workers, threads=threads, gpus=gpus, data_dir=data_dir,
                       progress=not no_progress, command=command)
    rows = result["rows"]
    failed = [r for r in rows if r["status"] != "ok"]
    click.echo(f"{cfg.name}: {len(rows)} cells ({len(failed)} failed) in {result['sweep']['wall_seconds']:.0f} s "
               f"-> {out}/index.html")
    for r in failed:
        click.echo(f"  failed: {r['dataset']} {r['arch']} {r['attack']} seed {r['seed']} / {r['defense']}: "
                   f"{r['error']}")


def register(cli_group: click.Group) -> click.Group:
    """Add ``sweep`` to ``cli_group``; returns it."""
    if "sweep" not in cli_group.commands:
        cli_group.add_command(sweep)
    return cli_group
