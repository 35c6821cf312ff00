"""``bench haaqinet``: make training data, train, evaluate and predict with HAAQI-Net; distil, fine-tune, SPL study.

Thin commands over :mod:`haaqinet.data`, :mod:`haaqinet.train`,
:mod:`haaqinet.evaluate`, :mod:`haaqinet.predict`, :mod:`haaqinet.distill`,
:mod:`haaqinet.ratings`, :mod:`haaqinet.finetune` and :mod:`haaqinet.spl_study`; torch is imported inside
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
                  help="HAAQI-Net: a non-intrusive predictor of HAAQI (make-data, train, evaluate, predict, ensemble, "
                       "distill, synth-ratings, finetune, spl-study).")


def _fail(exc: BenchError) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _progress(label: str):
    """A progress callback ``(done, total)``: a rewritten line on a terminal, timed lines in a log."""
    from rich.console import Console

    from benchmark.progress import reporter

    return reporter(label, Console(stderr=True, soft_wrap=True))


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
    denoiser_share: float = typer.Option(0.0, help="Share of conditions (new recipes) whose aid is a speech-denoiser "
                                         "chain (spectral-gating, mmse-stsa or deepfilternet, then NAL-R)."),
    level_copies: int = typer.Option(0, help="Copies of every training item (new recipes) judged at other "
                                     "presentation levels, each labelled by HAAQI (at least 10 dB away)."),
    haaqi_backend: Optional[str] = typer.Option(None, help="HAAQI implementation for this run "
                                                "[default: the recipe's; new recipes: fast]."),
) -> None:
    """Render sources, then label items with HAAQI (resumable; shows progress and the label histogram)."""
    from haaqinet import data

    try:
        if not 4.0 <= item_s <= 10.0:
            raise BenchError(f"--item-s {item_s} is outside 4-10 s")
        recipe = data.prepare(out, n_items=items, n_pieces=pieces, seed=seed, n_listeners=listeners,
                              conditions_per_group=conditions_per_group, item_s=item_s, denoiser_share=denoiser_share,
                              level_copies=level_copies,
                              haaqi_backend=haaqi_backend or "fast", source_s=item_s + 2.0, workers=workers,
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
def grow(
    data: Path = typer.Option(..., help="Labelled data set folder to grow (left unchanged)."),
    out: Path = typer.Option(..., help="New folder: the same labels, and a recipe with more items to label."),
    groups: Optional[int] = typer.Option(None, help="Groups in the grown recipe (more than now)."),
    denoiser_share: Optional[float] = typer.Option(None, help="Share of the new groups' conditions whose aid "
                                                   "is a speech-denoiser chain."),
    level_copies: Optional[int] = typer.Option(None, help="Copies of every training item at other levels."),
    level_copies_to: Optional[int] = typer.Option(None, help="Copy the training items of groups below this "
                                                  "[default: all]."),
    edge_copies: Optional[int] = typer.Option(None, help="Copies of every training item at levels up to 10 dB "
                                              "outside the recipe's SPL range, so its ends are not edges."),
    edge_copies_to: Optional[int] = typer.Option(None, help="Edge-copy the training items of groups below this "
                                                 "[default: all]."),
    arrangements: int = typer.Option(0, help="New arrangements (ensemble, tempo, passage) of every training "
                                     "source's score, rendered now; the new groups are training groups drawn "
                                     "from them only."),
    pieces: int = typer.Option(0, help="Scores of the music21 corpus that the data set has in no split, rendered "
                               "now as training music; the new groups are training groups drawn from them "
                               "(and from any new arrangements) only."),
    workers: int = typer.Option(1, help="Processes rendering the new arrangements and pieces."),
) -> None:
    """Grow a data set without relabelling it: more groups, denoiser aids, level or edge copies, new
    arrangements of the training music, new training pieces; then make-data."""
    from haaqinet import data as data_mod

    for name, value in (("--arrangements", arrangements), ("--pieces", pieces)):
        if value < 0:
            _fail(BenchError(f"{name} must be 0 or more, got {value}"))
    try:
        bar = _progress("sources rendered")
        recipe = data_mod.grow(data, out, n_groups=groups, denoiser_share=denoiser_share,
                               level_copies=level_copies, level_copies_to=level_copies_to,
                               edge_copies=edge_copies, edge_copies_to=edge_copies_to,
                               arrangements=arrangements, pieces=pieces, workers=workers,
                               progress=lambda done, total, _: bar(done, total))
    except BenchError as exc:
        _fail(exc)
    if arrangements or pieces:
        added = recipe["added_sources"]
        typer.echo(f"rendered {added['n_arrangements']} new arrangements of training pieces and "
                   f"{added['n_pieces']} new training pieces for groups {added['from_group']}.."
                   f"{recipe['n_groups'] - 1}")
    typer.echo(f"wrote {out}: {recipe['n_groups']} groups; the labels of {data} are kept. Label the new items "
               f"with: bench haaqinet make-data --out {out} --workers 2 --cache-inputs")


@app.command()
def pack(
    data: Path = typer.Option(..., help="Labelled data set folder."),
    out: Path = typer.Option(..., help="Folder for recipe.json and labels.jsonl.xz."),
) -> None:
    """Pack a data set's recipe and labels (xz) so others can rebuild it without labelling it again."""
    from haaqinet import packing

    try:
        info = packing.pack(data, out)
    except BenchError as exc:
        _fail(exc)
    typer.echo(f"packed {info['items']} items ({info['errors']} errors) of {data} into {out} "
               f"({info['bytes'] / 1e6:.1f} MB of labels)")


@app.command()
def unpack(
    packed: str = typer.Argument(..., help="A packed folder, or the name of a shipped one (e.g. haaqinet-v6)."),
    out: Path = typer.Option(..., help="New data set folder."),
    workers: int = typer.Option(1, help="Processes that render the sources."),
) -> None:
    """Rebuild a data set folder from packed labels: recipe, labels, and its sources rendered again."""
    from haaqinet import packing

    try:
        info = packing.unpack(packed, out, workers=workers)
    except BenchError as exc:
        _fail(exc)
    typer.echo(f"{out}: {info['items']} labelled items, {info['rendered']} sources rendered. Train with: "
               f"bench haaqinet train --data {out} --workers 2 (the inputs are rebuilt from the recipe)")


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
    warmup_steps: int = typer.Option(300, help="Steps of linear learning-rate warm-up."),
    ema: float = typer.Option(0.0, help="Validate and keep an exponential moving average of the weights "
                              "with this decay per step (e.g. 0.995; 0: off)."),
    init: Optional[str] = typer.Option(None, help="Start from this checkpoint (path, teacher or student): its "
                                       "architecture and weights; e.g. to continue training on a grown data set."),
    withhold_input_level: float = typer.Option(0.25, help="Networks with --model-arg input_level=true: the share "
                                               "of training items (fixed, seeded) trained with the clean music's "
                                               "presentation level unknown."),
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
                          crop_s_min=crop_s_min, weight_decay=weight_decay, warmup_steps=warmup_steps, ema=ema,
                          device=device, workers=workers, seed=seed, init=init,
                          withhold_input_level=withhold_input_level)
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
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint path, or default (the ensemble) / teacher / "
                                              "student [default: the ensemble]."),
    split: List[str] = typer.Option([], help="Splits to evaluate [default: test, unseen-conditions, val, train]."),
    device: str = typer.Option("cpu"), workers: int = typer.Option(1),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here."),
    predictions: Optional[Path] = typer.Option(None, help="Write per-item predictions (CSV) here."),
    input_level: bool = typer.Option(True, help="Give networks that take it each item's clean-music "
                                     "presentation level; --no-input-level judges them with it unknown."),
) -> None:
    """LCC, SRCC, MSE and Kendall's tau against HAAQI, overall and per split, SPL band and severity."""
    from haaqinet.evaluate import EVAL_SPLITS, format_report
    from haaqinet.evaluate import evaluate as run_evaluation
    from haaqinet.predict import DEFAULT_CHECKPOINT

    try:
        rep, table = run_evaluation(checkpoint or DEFAULT_CHECKPOINT, data, splits=tuple(split) or EVAL_SPLITS,
                                    device=device, workers=workers, progress=_progress("inputs regenerated"),
                                    input_level=input_level)
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
    input_spl: Optional[float] = typer.Option(None, help="RMS level in dB SPL at which the clean music was "
                                              "presented to the hearing aid (bench run --spl), if known; the "
                                              "shipped networks are more accurate with it."),
    manifest: Optional[Path] = typer.Option(None, help="CSV with columns file, audiogram, spl_db and optionally "
                                            "input_spl_db (blank: unknown)."),
    out: Optional[Path] = typer.Option(None, help="Output CSV for --manifest."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint path, or default (the ensemble) / teacher / "
                                              "student [default: the ensemble]."),
    device: str = typer.Option("cpu"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {file, ear, haaqinet}."),
) -> None:
    """Predict HAAQI for files without a reference, per file and ear."""
    from haaqinet.predict import Predictor, read_manifest

    try:
        if manifest is None and not files:
            raise BenchError("give audio files, or --manifest items.csv")
        predictor = Predictor(checkpoint, device=device)
        table, base = read_manifest(manifest) if manifest is not None else (None, None)
        given = input_spl is not None or (table is not None and "input_spl_db" in table.columns)
        if given and not predictor.uses_input_level:
            _echo(f"note: {predictor.checkpoint.name} does not take the clean music's level; it is unused")
        if not given and predictor.uses_input_level:
            _echo(f"note: {predictor.checkpoint.name} is more accurate given the level at which the clean music "
                  f"was presented to the hearing aid (--input-spl, or a manifest column input_spl_db); these "
                  f"files are judged with it unknown (docs/haaqinet.md)")
        if table is not None:
            scores = predictor.predict_manifest(table, base_dir=base)
            if out:
                scores.to_csv(out, index=False)
                _echo(f"wrote {out} ({len(scores)} rows)")
            if as_json or not out:
                typer.echo(scores.to_json(orient="records", indent=1) if as_json else scores.to_string(index=False))
            return
        rows = predictor.predict_files(files, audiogram=audiogram, spl_db=spl, input_spl_db=input_spl)
    except BenchError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['file']}  {r['ear']:<6} HAAQI-Net {r['haaqinet']:.4f}")


@app.command()
def ensemble(
    checkpoint: list[str] = typer.Option(..., help="Two or more networks (paths, or teacher / student)."),
    out: Path = typer.Option(..., help="The ensemble checkpoint to write (with its .json sidecar)."),
    data: Optional[Path] = typer.Option(None, help="Evaluate it on this data set's held-out splits."),
    workers: int = typer.Option(1, help="Processes regenerating the data set's inputs."),
) -> None:
    """Average several networks: one checkpoint whose score is the mean of theirs."""
    from haaqinet import ensemble as ensemble_mod
    from haaqinet.evaluate import format_report

    if out.exists():
        _fail(BenchError(f"{out} exists; give a new file"))
    try:
        model, metrics = ensemble_mod.build(checkpoint, out, data_folder=data, workers=workers, log=_echo)
    except BenchError as exc:
        _fail(exc)
    if metrics:
        typer.echo(format_report(metrics))
    typer.echo(f"wrote {out}: the mean of {len(model.members)} networks")


@app.command()
def distill(
    data: Path = typer.Option(..., help="Data set folder made by make-data."),
    teacher: str = typer.Option("teacher", help="Teacher checkpoint: a path, teacher (the shipped single network) or "
                                 "default (the ensemble: the mean of its networks, no hint term)."),
    out: Path = typer.Option(Path("haaqinet-student.pt"), help="Student checkpoint to write (+ .json sidecar)."),
    student_arg: List[str] = typer.Option([], help="HAAQINet option of the student key=value (JSON values), "
                                          "repeatable; overrides haaqinet.distill.STUDENT_ARGS."),
    student_frontend_arg: List[str] = typer.Option([], help="Front-end option of the student key=value, repeatable."),
    alpha: float = typer.Option(0.3, help="Weight of the HAAQI label against the teacher's scores (0..1)."),
    frame_weight: float = typer.Option(1.0, help="Weight of the frame term."),
    hint_weight: float = typer.Option(0.1, help="Weight of the encoder (hidden state) term; 0: off."),
    ema: float = typer.Option(0.995, help="Per-step decay of the weight average that is validated and kept; 0: off."),
    epochs: int = typer.Option(30, help="Epochs (the cosine decay spans them)."),
    batch_size: int = typer.Option(64), lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    patience: int = typer.Option(8, help="Epochs without validation improvement before stopping."),
    max_seconds: Optional[float] = typer.Option(None, help="Time limit for the epochs."),
    max_train_items: Optional[int] = typer.Option(None, help="Use a seeded sample of this many training items."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    workers: int = typer.Option(1, help="Processes that regenerate uncached inputs."),
    withhold_input_level: float = typer.Option(0.25, help="Teachers that take the clean music's presentation "
                                               "level: the share of training items (fixed, seeded) on which the "
                                               "student is trained with it unknown."),
    seed: int = typer.Option(0),
) -> None:
    """Distil a small student from a teacher checkpoint (docs/haaqinet-distill.md); evaluate both side by side."""
    from haaqinet.distill import STUDENT_ARGS, DistillConfig
    from haaqinet.distill import distill as run_distillation

    try:
        if not 0.0 <= alpha <= 1.0:
            raise BenchError(f"--alpha {alpha} is outside 0..1")
        if not 0.0 <= ema < 1.0:
            raise BenchError(f"--ema {ema} is outside 0..1 (0 turns it off)")
        args = json.loads(json.dumps(STUDENT_ARGS))
        args.update(_kv(student_arg))
        args["frontend_args"] = {**args.get("frontend_args", {}), **_kv(student_frontend_arg)}
        cfg = DistillConfig(teacher=teacher, student_args=args, alpha=alpha, frame_weight=frame_weight,
                            hint_weight=hint_weight, ema=ema, epochs=epochs, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, patience=patience, max_seconds=max_seconds,
                            max_train_items=max_train_items, device=device, workers=workers, seed=seed,
                            withhold_input_level=withhold_input_level)
        _, metrics = run_distillation(data, out, cfg, log=_echo)
    except BenchError as exc:
        _fail(exc)
    size = metrics["size"]
    typer.echo(f"parameters: teacher {size['teacher_parameters']:,}, student {size['student_parameters']:,} "
               f"({100 * size['parameter_reduction']:.1f} % fewer)")
    typer.echo(f"FLOPs per 10-s clip: teacher {size['teacher_flops_10s']['total'] / 1e6:.1f} M, student "
               f"{size['student_flops_10s']['total'] / 1e6:.1f} M ({100 * size['flop_reduction']:.1f} % fewer)")
    typer.echo(f"{'split':<18} {'n':>6} {'teacher LCC':>12} {'student LCC':>12} {'drop':>8}")
    for split, d in metrics["lcc_drop"].items():
        typer.echo(f"{split:<18} {metrics['per_split'][split]['n']:>6} {d['teacher_lcc']:>12.4f} "
                   f"{d['student_lcc']:>12.4f} {d['lcc_drop']:>8.4f}")
    typer.echo(f"wrote {out} and {out}.json")


@app.command("synth-ratings")
def synth_ratings(
    data: Path = typer.Option(..., help="Data set folder made by make-data (its labels drive the ratings)."),
    out: Path = typer.Option(..., help="Folder for audio/*.wav, ratings.csv and synthetic.json."),
    n_items: int = typer.Option(600, help="Items to rate (a seeded sample)."),
    split: List[str] = typer.Option([], help="Splits to sample [default: test, unseen-conditions]."),
    seed: int = typer.Option(0), workers: int = typer.Option(1, help="Processes that regenerate uncached inputs."),
) -> None:
    """Write a DEMONSTRATION ratings set: 1-5 MOS = known logistic of HAAQI + listener bias + noise (not listeners)."""
    from haaqinet.ratings import synthesise_ratings

    try:
        summary = synthesise_ratings(data, out, n_items=n_items, splits=tuple(split) or ("test", "unseen-conditions"),
                                     seed=seed, workers=workers, progress=_progress("inputs regenerated"))
    except BenchError as exc:
        _fail(exc)
    m = summary["model"]
    typer.echo(f"wrote {summary['csv']}: {summary['n']} synthetic ratings (1-5 MOS) from {summary['n_listeners']} "
               f"listeners; MOS = {m['floor']} + {m['ceil'] - m['floor']:g} * logistic({m['slope']:g} * (HAAQI - "
               f"{m['midpoint']})) + bias N(0, {m['bias_sd']}) + noise N(0, {m['noise_sd']}); LCC with HAAQI "
               f"{summary['lcc_rating_vs_haaqi']:.3f}. A demonstration, not listener data.")


@app.command()
def finetune(
    ratings: Path = typer.Option(..., help="Ratings CSV: file, audiogram, spl_db, score[, listener][, scale] "
                                 "(docs/haaqinet-finetune.md)."),
    scale: Optional[str] = typer.Option(None, help="Score scale: mos (1-5) or mushra (0-100) [default: the "
                                        "CSV's scale column]."),
    checkpoint: str = typer.Option("teacher", help="Checkpoint to start from: a path, teacher or student "
                                   "(one network)."),
    out: Path = typer.Option(Path("haaqinet-finetuned.pt"), help="Fine-tuned checkpoint (+ .json sidecar)."),
    held_out: float = typer.Option(0.2, help="Share of audio files held out for the report."),
    val: float = typer.Option(0.15, help="Share of the remaining files for early stopping."),
    freeze: Optional[str] = typer.Option(None, help="Comma-separated layer groups to freeze: frontend, encoder, "
                                         "rnn, project, attention, output, map [default: none; with --calibrate, "
                                         "all but the map]."),
    calibrate: bool = typer.Option(False, help="Add a learned monotone map of the scores (4 parameters) and, "
                                   "unless --freeze says otherwise, train only it."),
    epochs: int = typer.Option(60), batch_size: int = typer.Option(32),
    lr: Optional[float] = typer.Option(None, help="Learning rate [default: 5e-4; 0.02 for the map alone]."),
    weight_decay: float = typer.Option(1e-2), patience: int = typer.Option(8),
    max_seconds: Optional[float] = typer.Option(None, help="Time limit for the epochs."),
    bootstrap: int = typer.Option(2000, help="Bootstrap resamples for the confidence intervals."),
    seed: int = typer.Option(0), device: str = typer.Option("cpu"),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here."),
    predictions: Optional[Path] = typer.Option(None, help="Write per-rating predictions (CSV) here."),
) -> None:
    """Fine-tune on subjective ratings; report zero-shot against fine-tuned on held-out files, with a bootstrap CI."""
    from haaqinet.finetune import FinetuneConfig, format_report
    from haaqinet.finetune import finetune as run_finetune

    try:
        cfg = FinetuneConfig(checkpoint=checkpoint, scale=scale, held_out=held_out, val=val,
                             freeze=None if freeze is None else [g.strip() for g in freeze.split(",") if g.strip()],
                             calibrate=calibrate, epochs=epochs,
                             batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                             max_seconds=max_seconds, bootstrap=bootstrap, seed=seed, device=device)
        _, report = run_finetune(ratings, out, cfg, log=_echo, predictions=predictions,
                                 progress=_progress("audio read"))
    except BenchError as exc:
        _fail(exc)
    typer.echo(format_report(report))
    if as_json:
        as_json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    typer.echo(f"wrote {out} and {out}.json")


@app.command("spl-study")
def spl_study(
    data: Path = typer.Option(..., help="Data set folder made by make-data."),
    checkpoint: List[str] = typer.Option([], help="Checkpoint(s) to evaluate, path or name, repeatable "
                                         "[default: default, the ensemble]."),
    n_groups: int = typer.Option(25, help="Groups (of 4 items each) to relabel at every level."),
    split: str = typer.Option("test", help="Split the groups come from: test (published figures) or val "
                              "(for choosing between models without looking at the test split)."),
    spl: str = typer.Option("45,50,55,60,65,70,75,80,85", help="Presentation levels in dB SPL."),
    seed: int = typer.Option(0), workers: int = typer.Option(1, help="HAAQI labelling processes."),
    haaqi_backend: Optional[str] = typer.Option(None, help="HAAQI implementation [default: the recipe's]."),
    out: Path = typer.Option(Path("leaderboards"), help="Folder for haaqinet-spl-study.md/.png/.csv/.json."),
    input_level: bool = typer.Option(True, help="Give networks that take it the clean music's presentation "
                                     "level (the study's level, as bench run gives --spl); --no-input-level "
                                     "judges them with it unknown."),
    device: str = typer.Option("cpu"),
) -> None:
    """Evaluate checkpoints against HAAQI relabelled at 45..85 dB SPL on held-out items; write table + plot."""
    import shlex
    import sys

    from haaqinet.spl_study import run_study, write_outputs

    try:
        try:
            levels = [float(v) for v in spl.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise BenchError(f"--spl {spl!r}: give levels in dB SPL separated by commas") from None
        if len(levels) < 2:
            raise BenchError("--spl needs at least two levels")
        result = run_study(checkpoint or ["default"], data, n_groups=n_groups, spls=levels, seed=seed,
                           split=split, workers=workers, haaqi_backend=haaqi_backend, device=device,
                           progress=_progress("labels at all levels"), log=_echo, input_level=input_level)
        argv = sys.argv[sys.argv.index("spl-study"):] if "spl-study" in sys.argv else ["spl-study"]
        command = "bench haaqinet " + " ".join(shlex.quote(a) for a in argv)
        paths = write_outputs(result, out, command=command)
    except BenchError as exc:
        _fail(exc)
    alls = result["table"][result["table"]["severity"] == "all"]
    for label, c in result["checkpoints"].items():
        typer.echo(f"{label} ({c['file']}):")
        for r in alls[alls["checkpoint"] == label].itertuples():
            typer.echo(f"  {r.spl_db:>5g} dB SPL  n={r.n:<4} LCC {r.lcc:.4f}  SRCC {r.srcc:.4f}  MSE {r.mse:.5f}")
        s = c["summary"]
        typer.echo(f"  gap best-worst LCC {s['gap']:.4f} (goal <= {s['goal_gap']}: "
                   f"{'met' if s['goal_met'] else 'missed'}; 95 % interval {s['gap_ci95'][0]:.3f}-"
                   f"{s['gap_ci95'][1]:.3f}, {100 * s['share_within_goal']:.0f} % of resamples within the goal)")
    typer.echo("wrote " + ", ".join(paths.values()))


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
