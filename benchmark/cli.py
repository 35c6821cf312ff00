"""The ``bench`` command line. Thin: parse, call the library, print.

Heavy modules (numpy stacks, pyclarity, torch) are imported inside the
commands, so ``bench --help`` stays instant and never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from benchmark.errors import BenchError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="haaqi-bench: benchmark hearing-aid music processing with HAAQI.")
corpus_app = typer.Typer(no_args_is_help=True, help="Build or inspect music corpora.")
app.add_typer(corpus_app, name="corpus")


def _mount_haaqinet() -> None:
    from haaqinet.cli import app as haaqinet_app

    app.add_typer(haaqinet_app, name="haaqinet",
                  help="HAAQI-Net: make-data, train, evaluate, predict (non-intrusive HAAQI).")


_mount_haaqinet()

DEFAULT_PROCESSORS = "unprocessed,nalr,nalr-agc,camfit-wdrc"
DEFAULT_AUDIOGRAMS = "N3"
DEFAULT_SPLS = "65"


def _fail(exc: BenchError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


#: ``bench run`` options that define the trials and how they are judged (what ``--like`` takes from a run).
SWEEP_OPTIONS = ("spl", "audiograms", "listeners", "corpus", "excerpt_s", "limit", "clips", "small", "reference",
                 "scenario", "noise", "snr", "haaqi_backend", "haaqinet", "haaqinet_checkpoint")


@app.command()
def run(
    ctx: typer.Context,
    processor: str = typer.Option(DEFAULT_PROCESSORS, "--processor", "-p",
                                  help="Comma-separated processor names or file.py:Class."),
    spl: str = typer.Option(DEFAULT_SPLS, help="Presentation levels of the music in dB SPL."),
    audiograms: Optional[str] = typer.Option(None, help=f"Built-in names or 8-value groups "
                                             f"[default: {DEFAULT_AUDIOGRAMS} unless --listeners]"),
    listeners: Optional[Path] = typer.Option(None, help="Clarity/Cadenza listeners.json."),
    corpus: str = typer.Option("builtin", help="'builtin', a folder of audio, or a MUSDB18 folder."),
    excerpt_s: float = typer.Option(10.0, help="Excerpt length in seconds."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N clips."),
    clips: Optional[str] = typer.Option(None, help="Use only these clip ids (comma-separated, in this order)."),
    small: bool = typer.Option(False, help="Smoke run: 2 clips of 4 s."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Worker processes (0 = in-process)."),
    param: list[str] = typer.Option([], help="Processor parameter, name.key=value (repeatable)."),
    reference: str = typer.Option("nalr", help="Reference convention: nalr (Cadenza) or clean."),
    scenario: str = typer.Option("clean", help="Listening scenarios: clean, noisy or clean,noisy "
                                 "(docs/conventions.md, 'Noisy scenarios')."),
    noise: Optional[str] = typer.Option(None, help="Noise types of the noisy scenario: pink, ssn, "
                                        "babble (default: ssn,babble)."),
    snr: Optional[str] = typer.Option(None, help="SNRs of the noisy scenario in dB, -20..60 "
                                      "(default: 5)."),
    haaqi_backend: str = typer.Option("fast", help="HAAQI implementation: fast or pyclarity."),
    haaqinet: bool = typer.Option(True, "--haaqinet/--no-haaqinet",
                                  help="Also predict each output with HAAQI-Net."),
    haaqinet_checkpoint: Optional[str] = typer.Option(None, help="HAAQI-Net checkpoint: a path, or "
                                                      "default (the shipped ensemble), teacher or student."),
    results: Path = typer.Option(Path("results"), help="Parent folder of run folders."),
    run_id: Optional[str] = typer.Option(None, help="Run folder name [default: from the config]."),
    retry_errors: bool = typer.Option(False, help="Rerun trials that failed before."),
    executor: str = typer.Option("local", help="Where jobs run: local (a process pool, --workers) "
                                 "or dask (docs/cluster.md)."),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler tcp://host:port "
                                            "[default: a LocalCluster here]."),
    dask_workers: int = typer.Option(2, help="Worker processes of the Dask LocalCluster."),
    trial_timeout: Optional[float] = typer.Option(None, help="Seconds one job (clip x listener x "
                                                  "SPL, all processors) may run."),
    worker_memory_gb: Optional[float] = typer.Option(None, help="Memory limit per worker in GiB."),
    like: Optional[Path] = typer.Option(None, help="Take every sweep setting (SPLs, listeners, corpus, clips, "
                                        "excerpt, conditions, reference, HAAQI backend, HAAQI-Net) from this run "
                                        "folder, so that the new run can be ranked with it."),
) -> None:
    """Run (or resume) a sweep and write the table, leaderboard and plots of the run."""
    from benchmark import options

    try:
        if like is not None:
            config = _like(ctx, like, options.parse_processors(processor, param))
        else:
            config = _config(processor, param, spl, audiograms, listeners, corpus, excerpt_s, limit, clips, small,
                             reference, scenario, noise, snr, haaqi_backend, haaqinet, haaqinet_checkpoint)
        from benchmark.haaqi import check_backend

        check_backend(config.haaqi_backend)
        from benchmark.executors import make_executor

        pool = make_executor(executor, workers=dask_workers if executor == "dask" else workers,
                             scheduler=scheduler, trial_timeout_s=trial_timeout,
                             worker_memory_gb=worker_memory_gb)
        summary = _run_with_progress(config, results, run_id, pool, retry_errors)
    except BenchError as exc:
        _fail(exc)
    _report(summary)


def _like(ctx: typer.Context, run_dir: Path, processors):
    """The sweep of ``run_dir`` (its run.json) with other processors; refuses sweep options given beside it."""
    from dataclasses import replace

    from benchmark.store import RUN_JSON, RunStore
    from benchmark.sweep import SweepConfig

    given = [name for name in SWEEP_OPTIONS if ctx.get_parameter_source(name).name == "COMMANDLINE"]
    if given:
        flags = ", ".join("--haaqinet/--no-haaqinet" if name == "haaqinet" else "--" + name.replace("_", "-")
                          for name in given)
        raise BenchError(f"--like takes the sweep settings from {run_dir}; drop {flags}")
    if not (run_dir / RUN_JSON).exists():
        raise BenchError(f"--like {run_dir}: not a run folder (no {RUN_JSON})")
    return replace(SweepConfig.from_dict(RunStore(run_dir).meta()["config"]), processors=processors)


def _config(processor, param, spl, audiograms, listeners, corpus, excerpt_s, limit, clips, small, reference,
            scenario, noise, snr, haaqi_backend, haaqinet, haaqinet_checkpoint):
    """The sweep configuration of ``bench run``'s options."""
    from benchmark import options
    from benchmark.sweep import SweepConfig

    scenarios, noises, snrs_db = options.parse_scenarios(scenario, noise, snr)
    return SweepConfig(
        processors=options.parse_processors(processor, param),
        spls_db=options.parse_spls(spl),
        listeners=options.parse_listeners(audiograms if audiograms or listeners else DEFAULT_AUDIOGRAMS,
                                          str(listeners) if listeners else None),
        corpus=corpus, excerpt_s=4.0 if small else excerpt_s,
        reference=reference, haaqi_backend=haaqi_backend,
        haaqinet_checkpoint=_checkpoint_spec(haaqinet_checkpoint) if haaqinet else None,
        limit_clips=2 if small and limit is None else limit,
        clip_ids=tuple(c.strip() for c in clips.split(",") if c.strip()) if clips is not None else None,
        scenarios=scenarios, noises=noises, snrs_db=snrs_db)


def _checkpoint_spec(value: str | None) -> str:
    """A shipped checkpoint's name as it is, a path made absolute (the run may resume elsewhere)."""
    from haaqinet.predict import CHECKPOINT_NAMES

    if value is None:
        return "default"
    return value if value in CHECKPOINT_NAMES else str(Path(value).resolve())


@contextlib.contextmanager
def _trial_progress(resumed: str):
    """Trials progress (:mod:`benchmark.progress`); yields (on_start, on_rows) callbacks for run and rescore.

    ``resumed`` formats the resume message with ``{done}`` and ``{todo}``.
    """
    from benchmark.progress import progress

    console = _console()
    with progress("trials", console) as counter:

        def on_start(n_todo, n_done):
            if n_done:
                console.print(resumed.format(done=n_done, todo=n_todo))
            counter.set_total(n_todo)

        def on_rows(rows):
            counter.advance(len(rows))

        yield on_start, on_rows


def _run_with_progress(config, results, run_id, executor, retry_errors):
    from benchmark import runner

    with _trial_progress("resuming: {done} trials already done, {todo} to run") as (on_start, on_rows):
        return runner.run_sweep(config, results_dir=results, run_id=run_id, executor=executor,
                                retry_errors=retry_errors, on_start=on_start, on_rows=on_rows,
                                command=_command_line())


def _command_line() -> str | None:
    """The ``bench ...`` command as typed (recorded in run.json), or None when not run as ``bench``."""
    return shlex.join(["bench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "bench" else None


def _report(summary) -> None:
    from benchmark import leaderboard

    console = _console()
    table = summary.table
    console.print(f"[bold]{summary.n_ok} ok, {summary.n_error} failed, {summary.n_skipped} resumed[/] "
                  f"of {summary.n_trials} trials in {summary.wall_s:.1f} s "
                  f"({summary.trials_per_minute:.0f} trials/min) -> {summary.run_dir}")
    for err in summary.errors[:5]:
        console.print(f"  [red]failed[/] {err}")
    if len(summary.errors) > 5:
        console.print(f"  ... and {len(summary.errors) - 5} more (see the error column)")
    if table is None or not (table["status"] == "ok").any():
        raise typer.Exit(1)
    board, paths = _write_run_outputs(table, summary.run_dir)
    conditions = leaderboard.with_conditions(table)
    labels = leaderboard.condition_order(conditions)
    for label in labels:
        if len(labels) > 1:
            console.print(f"  [bold]{label}[/]")
        for i, r in leaderboard.ranking(conditions[conditions["condition"] == label]).iterrows():
            console.print(f"  {i + 1}. {r['processor']:<28} HAAQI {r['mean']:.3f} "
                          f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]  n={r['n']}")
    console.print(f"leaderboard: {board}\nplots: {', '.join(str(p) for p in paths)}")


def _write_run_outputs(table, run_dir: Path):
    """A run's leaderboard.md and plots/ from its table; returns (leaderboard path, plot paths)."""
    from benchmark import leaderboard, plots
    from benchmark.merge import made_by
    from benchmark.store import RunStore

    board = run_dir / "leaderboard.md"
    run_command = "\n".join(made_by(run_dir, RunStore(run_dir).meta())) or None
    board.write_text(leaderboard.render(table, title=f"HAAQI leaderboard: {run_dir.name}", run_command=run_command))
    return board, plots.plot_all(table, run_dir / "plots")


@app.command()
def rescore(
    run_id: str = typer.Argument(..., help="Run folder name under --results."),
    haaqinet_checkpoint: str = typer.Option("default", help="HAAQI-Net checkpoint: a path, or default "
                                            "(the shipped ensemble), teacher or student."),
    results: Path = typer.Option(Path("results"), help="Parent folder of run folders."),
    workers: int = typer.Option(os.cpu_count() or 1, help="Worker processes (0 = in-process)."),
) -> None:
    """Re-predict a finished run with another HAAQI-Net checkpoint, keeping its HAAQI scores.

    The processed audio is regenerated (the processors are deterministic) and checked against the run;
    the journal is rewritten only when every trial is done (the old one is kept), then the run's table,
    leaderboard and plots. Interrupted, it resumes.
    """
    from benchmark.executors import make_executor
    from benchmark.rescore import rescore_haaqinet
    from benchmark.store import load_table

    console = _console()
    run_dir = results / run_id
    try:
        with _trial_progress("resuming: {done} trials already re-scored, {todo} to go") as (on_start, on_rows):
            summary = rescore_haaqinet(run_dir, _checkpoint_spec(haaqinet_checkpoint),
                                       executor=make_executor("local", workers=workers), on_start=on_start,
                                       on_rows=on_rows)
        board, paths = _write_run_outputs(load_table(run_dir), run_dir)
    except BenchError as exc:
        _fail(exc)
    console.print(f"{summary['n_rescored']} trials re-scored with {summary['checkpoint']}, "
                  f"{summary['n_failed']} without a prediction, {summary['n_unchanged']} failed rows unchanged; "
                  f"previous journal kept as {run_dir / summary['backup']}")
    console.print(f"leaderboard: {board}\nplots: {', '.join(str(p) for p in paths)}")


@app.command()
def leaderboard(
    run_dirs: list[Path] = typer.Argument(..., help="A run folder, results/<run-id>; or several run over the "
                                          "same trials with different processors, ranked together."),
    out: Optional[Path] = typer.Option(None, help="Markdown file [default: <run>/leaderboard.md; needed "
                                       "for several runs]."),
    title: Optional[str] = typer.Option(None, help="Title of the page."),
    by: Optional[str] = typer.Option(None, help="Also rank within each value of these columns: "
                                     "scenario, noise, snr, condition, spl, severity, audiogram "
                                     "(default: the listening-condition columns that vary)."),
    against: Optional[str] = typer.Option(None, help="Compare every processor with this one (label or id), "
                                          "paired trial by trial [default: each with the next in the ranking]."),
) -> None:
    """Write the Markdown leaderboard of a run, or of several runs ranked together."""
    from benchmark import leaderboard as lb
    from benchmark.merge import load_runs
    from benchmark.options import split_list

    try:
        groups = lb.check_by(split_list(by)) if by is not None else None  # before reading
        target = _output_for(run_dirs, out, "leaderboard.md")
        table, run_commands = load_runs(run_dirs)
        command = shlex.join(["bench", "leaderboard", *map(str, run_dirs), *(["--out", str(out)] if out else []),
                              *(["--title", title] if title else []), *(["--by", by] if by is not None else []),
                              *(["--against", against] if against else [])])
        names = " + ".join(d.name for d in run_dirs)
        text = lb.render(table, title=title or f"HAAQI leaderboard: {names}",
                         command=command, by=groups, run_command="\n".join(run_commands) or None,
                         against=against)
    except BenchError as exc:
        _fail(exc)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    typer.echo(f"wrote {target}")


@app.command()
def plot(
    run_dirs: list[Path] = typer.Argument(..., help="A run folder, results/<run-id>; or several run over the "
                                          "same trials with different processors, drawn together."),
    out: Optional[Path] = typer.Option(None, help="Folder for PNGs [default: <run>/plots; needed for "
                                       "several runs]."),
) -> None:
    """Draw HAAQI against SPL per processor, heatmaps and the HAAQI-Net agreement, of one or several runs."""
    from benchmark import plots
    from benchmark.merge import load_runs

    try:
        target = _output_for(run_dirs, out, "plots")
        paths = plots.plot_all(load_runs(run_dirs)[0], target)
    except BenchError as exc:
        _fail(exc)
    for p in paths:
        typer.echo(f"wrote {p}")


def _output_for(run_dirs: list[Path], out: Optional[Path], default: str) -> Path:
    if out is not None:
        return out
    if len(run_dirs) > 1:
        raise BenchError("give --out when combining several runs (no run folder is theirs alone)")
    return run_dirs[0] / default


@app.command("ls")
def ls(what: str = typer.Argument(..., help="processors | audiograms | corpora")) -> None:
    """List processors (with parameters), audiograms or corpora."""
    from benchmark import listing

    try:
        typer.echo(listing.render(what))
    except BenchError as exc:
        _fail(exc)


@app.command()
def haaqi(
    reference: Optional[Path] = typer.Argument(None, help="Reference audio file."),
    processed: Optional[Path] = typer.Argument(None, help="Processed audio file."),
    audiogram: str = typer.Option("NH", help="Built-in name or 8 dB HL values (250..8000 Hz)."),
    spl: float = typer.Option(65.0, help="dB SPL of the reference's RMS."),
    equalisation: int = typer.Option(2, help="1: HAAQI applies NAL-R to the reference; "
                                     "2: the reference already has it."),
    backend: str = typer.Option("fast", help="HAAQI implementation: fast or pyclarity."),
    manifest: Optional[Path] = typer.Option(None, help="CSV of pairs: reference, processed, "
                                            "audiogram, spl_db[, equalisation]."),
    out: Optional[Path] = typer.Option(None, help="Output CSV for --manifest."),
    workers: int = typer.Option(0, help="Worker processes for --manifest (0 = this process)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score a reference/processed pair (per ear), or many pairs from a manifest."""
    from benchmark import pairs
    from benchmark.audiogram import parse_audiogram
    from benchmark.haaqi import check_backend

    try:
        check_backend(backend)
        if manifest is not None:
            _score_manifest(manifest, out, backend, equalisation, as_json, workers)
            return
        if reference is None or processed is None:
            raise BenchError("give REFERENCE and PROCESSED files, or --manifest pairs.csv")
        rows = pairs.score_pair(reference, processed, audiogram=parse_audiogram(audiogram),
                                spl_db=spl, equalisation=equalisation, backend=backend)
    except BenchError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['ear']:<6} HAAQI {r['haaqi']:.4f}  ({r['seconds']:.1f} s, {r['backend']})")


def _score_manifest(manifest, out, backend, equalisation, as_json, workers) -> None:
    from benchmark import pairs
    from benchmark.progress import progress

    table = pairs.read_manifest(manifest)
    with progress("pairs", _console(), total=len(table)) as counter:
        scores = pairs.score_manifest(table, backend=backend, default_equalisation=equalisation,
                                      workers=workers, on_row=counter.advance)
    if out:
        scores.to_csv(out, index=False)
        typer.echo(f"wrote {out} ({(scores['status'] == 'ok').sum()} ok, "
                   f"{(scores['status'] != 'ok').sum()} failed)")
    if as_json:
        typer.echo(scores.to_json(orient="records", indent=2))
    elif not out:
        typer.echo(scores.to_csv(index=False))


@corpus_app.command("build")
def corpus_build(
    excerpt_s: float = typer.Option(10.0, help="Excerpt length in seconds."),
    force: bool = typer.Option(False, help="Rebuild even if cached."),
) -> None:
    """Render the built-in corpus (cached; automatic on first use)."""
    from benchmark.corpus import build_builtin

    try:
        corpus = build_builtin(excerpt_s=excerpt_s, force=force)
    except BenchError as exc:
        _fail(exc)
    typer.echo(f"{len(corpus.clips)} clips in {corpus.root} (manifest {corpus.manifest_hash[:12]})")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
