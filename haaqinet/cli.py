"""``bench haaqinet``: make training data, train, evaluate and predict with HAAQI-Net.

Thin commands over :mod:`haaqinet.data`, :mod:`haaqinet.train`,
:mod:`haaqinet.evaluate` and :mod:`haaqinet.predict`; torch is imported inside
the commands only. Run as ``bench haaqinet ...`` or ``python -m haaqinet.cli ...``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer

from benchmark.errors import BenchError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="HAAQI-Net: a non-intrusive predictor of HAAQI (make-data, train, evaluate, predict).")


def _fail(exc: BenchError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _progress(label: str):
    """A progress callback ``(done, total)`` printing about every 2 %."""
    state = {"last": -1}

    def show(done: int, total: int, *_):
        step = max(1, total // 50)
        if done // step != state["last"] or done == total:
            state["last"] = done // step
            typer.echo(f"\r{label}: {done}/{total}", err=True, nl=done == total)
    return show


@app.command("make-data")
def make_data(
    out: Path = typer.Option(..., help="Data set folder (created, or resumed if it has a recipe)."),
    items: int = typer.Option(24000, help="Items in the recipe (labelled as far as time allows)."),
    pieces: int = typer.Option(170, help="music21 scores to render as sources."),
    listeners: int = typer.Option(500, help="Generated listeners (two ears each)."),
    conditions_per_group: int = typer.Option(4, help="Conditions sharing one excerpt, ear and level."),
    item_s: float = typer.Option(4.0, help="Item length in seconds (4-10)."),
    seed: int = typer.Option(0, help="Recipe seed."),
    workers: int = typer.Option(1, help="Labelling processes."),
    max_seconds: Optional[float] = typer.Option(None, help="Stop after this long (resume later)."),
    cache_inputs: bool = typer.Option(False, help="Also write the 16-kHz model inputs."),
    reverse: bool = typer.Option(False, help="Label from the last group down (to share work between machines)."),
    haaqi_backend: Optional[str] = typer.Option(None, help="HAAQI implementation for this run "
                                                "[default: the recipe's; new recipes: fast]."),
) -> None:
    """Render sources, then label items with HAAQI (resumable; shows progress and the label histogram)."""
    from haaqinet import data

    try:
        if not 4.0 <= item_s <= 10.0:
            raise BenchError(f"--item-s {item_s} is outside 4-10 s")
        recipe = data.prepare(out, n_items=items, n_pieces=pieces, seed=seed, n_listeners=listeners,
                              conditions_per_group=conditions_per_group, item_s=item_s,
                              haaqi_backend=haaqi_backend or "fast", source_s=item_s + 2.0,
                              progress=lambda i, n, s: _echo(f"rendered source {i}/{n}: {s}"))
        _echo(f"{out}: {len(recipe['sources'])} sources, {recipe['n_groups']} groups of "
              f"{recipe['conditions_per_group']} items")
        summary = data.make_data(out, workers=workers, max_seconds=max_seconds, cache_inputs=cache_inputs,
                                 progress=_progress("labelled items"), haaqi_backend=haaqi_backend,
                                 reverse=reverse)
    except BenchError as exc:
        _fail(exc)
    _echo(f"{summary['ok']} labelled ({summary['errors']} failed) of {summary['total']}; per split "
          f"{summary['per_split']}; {summary['seconds']:.0f} s this run")
    width = max([c for _, _, c in summary["histogram"]] + [1])
    for lo, hi, count in summary["histogram"]:
        typer.echo(f"HAAQI {lo:.1f}-{hi:.1f} {count:>7} {'#' * round(40 * count / width)}")


@app.command()
def train(
    data: Path = typer.Option(..., help="Data set folder made by make-data."),
    frontend: str = typer.Option("auditory", help="Front end: auditory (default, trained here), mel, beats or hf."),
    frontend_arg: List[str] = typer.Option([], help="Front-end option key=value (JSON values), repeatable; "
                                           "e.g. checkpoint_path=/models/BEATs.pt."),
    model_arg: List[str] = typer.Option([], help="HAAQINet option key=value (JSON values), repeatable."),
    out: Path = typer.Option(Path("haaqinet-checkpoint.pt"), help="Checkpoint to write (+ .json sidecar)."),
    epochs: int = typer.Option(30), batch_size: int = typer.Option(32), lr: float = typer.Option(1e-3),
    patience: int = typer.Option(5, help="Epochs without validation improvement before stopping."),
    max_seconds: Optional[float] = typer.Option(None, help="Time limit for the epochs."),
    crop_s_min: Optional[float] = typer.Option(None, help="Train on random excerpts of at least this many seconds."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    workers: int = typer.Option(1, help="Processes that regenerate uncached inputs."),
    seed: int = typer.Option(0),
) -> None:
    """Train HAAQI-Net with early stopping on the validation split; write a self-describing checkpoint."""
    from haaqinet.train import TrainConfig
    from haaqinet.train import train as run_training

    try:
        cfg = TrainConfig(frontend=frontend, frontend_args=_kv(frontend_arg), model_args=_kv(model_arg),
                          epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, max_seconds=max_seconds,
                          crop_s_min=crop_s_min, weight_decay=weight_decay,
                          device=device, workers=workers, seed=seed)
        _, metrics = run_training(data, out, cfg, log=_echo)
    except BenchError as exc:
        _fail(exc)
    for split, m in metrics["per_split"].items():
        typer.echo(f"{split:<18} n={m['n']:<6} LCC {m['lcc']:.4f}  SRCC {m['srcc']:.4f}  MSE {m['mse']:.5f}  "
                   f"Kendall {m['kendall']:.4f}")
    typer.echo(f"wrote {out} and {out}.json")


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="Data set folder made by make-data."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint [default: the shipped one]."),
    split: List[str] = typer.Option([], help="Splits to evaluate [default: test, unseen-conditions, val, train]."),
    device: str = typer.Option("cpu"), workers: int = typer.Option(1),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here."),
    predictions: Optional[Path] = typer.Option(None, help="Write per-item predictions (CSV) here."),
) -> None:
    """LCC, SRCC, MSE and Kendall's tau against HAAQI, overall and per split, SPL band and severity."""
    from haaqinet.evaluate import EVAL_SPLITS, format_report
    from haaqinet.evaluate import evaluate as run_evaluation
    from haaqinet.predict import DEFAULT_CHECKPOINT

    try:
        rep, table = run_evaluation(checkpoint or DEFAULT_CHECKPOINT, data, splits=tuple(split) or EVAL_SPLITS,
                                    device=device, workers=workers, progress=_progress("inputs regenerated"))
    except BenchError as exc:
        _fail(exc)
    typer.echo(format_report(rep))
    if as_json:
        as_json.write_text(json.dumps(rep, indent=1, default=str) + "\n")
    if predictions:
        cols = ["item_id", "split", "condition", "audiogram", "severity", "spl_db", "haaqi", "haaqinet"]
        table[cols].to_csv(predictions, index=False)


@app.command()
def predict(
    files: List[Path] = typer.Argument(None, help="Audio files (mono: one ear; stereo: per ear)."),
    audiogram: str = typer.Option("NH", help="Built-in name or 8 dB HL values (250..8000 Hz)."),
    spl: float = typer.Option(65.0, help="RMS presentation level of each file in dB SPL."),
    manifest: Optional[Path] = typer.Option(None, help="CSV with columns file, audiogram, spl_db."),
    out: Optional[Path] = typer.Option(None, help="Output CSV for --manifest."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint [default: the shipped one]."),
    device: str = typer.Option("cpu"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {file, ear, haaqinet}."),
) -> None:
    """Predict HAAQI for files without a reference, per file and ear."""
    from haaqinet.predict import Predictor, read_manifest

    try:
        if manifest is None and not files:
            raise BenchError("give audio files, or --manifest items.csv")
        predictor = Predictor(checkpoint, device=device)
        if manifest is not None:
            table, base = read_manifest(manifest)
            scores = predictor.predict_manifest(table, base_dir=base)
            if out:
                scores.to_csv(out, index=False)
                _echo(f"wrote {out} ({len(scores)} rows)")
            if as_json or not out:
                typer.echo(scores.to_json(orient="records", indent=1) if as_json else scores.to_string(index=False))
            return
        rows = predictor.predict_files(files, audiogram=audiogram, spl_db=spl)
    except BenchError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['file']}  {r['ear']:<6} HAAQI-Net {r['haaqinet']:.4f}")


def _kv(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise BenchError(f"option {item!r}: use key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    app()
