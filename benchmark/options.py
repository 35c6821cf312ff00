"""Parsing of command-line values into library objects (no I/O besides reading files)."""

from __future__ import annotations

import re

from benchmark.audiogram import Listener, listeners_from_names, load_listeners_json
from benchmark.errors import BenchError
from benchmark.sweep import ProcessorSpec


def split_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``."""
    return [p.strip() for p in str(text).split(",") if p.strip()]


def parse_spls(text: str) -> tuple[float, ...]:
    """``"55,65,75"`` -> ``(55.0, 65.0, 75.0)``."""
    out = []
    for item in split_list(text):
        try:
            out.append(float(item))
        except ValueError:
            raise BenchError(f"--spl: {item!r} is not a number (use e.g. 55,65,75)") from None
    if not out:
        raise BenchError("--spl needs at least one level, e.g. --spl 65")
    return tuple(out)


def _is_number(token: str) -> bool:
    return re.fullmatch(r"[-+]?\d+(\.\d*)?", token) is not None


def parse_audiogram_list(text: str) -> list[str]:
    """Audiogram specs from a comma-separated list of names and 8-value groups.

    ``"N2,N3,S2"`` -> ``["N2", "N3", "S2"]``; numbers are grouped in eights, so
    ``"N3,10,20,30,40,50,60,60,60"`` -> ``["N3", "10,20,30,40,50,60,60,60"]``.
    Values may also be separated by ``;`` or spaces inside one item.
    """
    specs, numbers = [], []
    for token in split_list(text):
        if _is_number(token):
            numbers.append(token)
            if len(numbers) == 8:
                specs.append(",".join(numbers))
                numbers = []
            continue
        if numbers:
            raise BenchError(f"--audiograms: {len(numbers)} loose values before {token!r}; "
                             "give 8 dB HL values per audiogram")
        specs.append(token)
    if numbers:
        raise BenchError(f"--audiograms: {len(numbers)} trailing values; give 8 dB HL values "
                         "per audiogram (250..8000 Hz)")
    return specs


def parse_listeners(audiograms: str | None, listeners_json: str | None) -> tuple[Listener, ...]:
    """Listeners from ``--listeners file.json`` and/or ``--audiograms`` (same audiogram both ears)."""
    out: list[Listener] = []
    if listeners_json:
        out += load_listeners_json(listeners_json)
    if audiograms:
        out += listeners_from_names(parse_audiogram_list(audiograms))
    return tuple(out)


def parse_processors(text: str, params: list[str]) -> tuple[ProcessorSpec, ...]:
    """``"nalr,nalr-agc"`` plus ``["nalr.nfir_taps=440"]`` -> processor specs."""
    from processors.registry import create, parse_params

    names = split_list(text)
    if not names:
        raise BenchError("--processor needs at least one name; `bench ls processors` lists them")
    by_name = parse_params(params, names)
    specs = tuple(ProcessorSpec(n, tuple(sorted(by_name.get(n, {}).items()))) for n in names)
    for spec in specs:  # fail before any work on a bad name or parameter
        create(spec.name, dict(spec.params))
    return specs


#: Noise types and SNRs of the noisy scenario when --noise / --snr are not given.
DEFAULT_NOISES = "ssn,babble"
DEFAULT_SNRS_DB = "5"


def parse_scenarios(scenario: str, noise: str | None, snr: str | None
                    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[float, ...]]:
    """``--scenario``, ``--noise``, ``--snr`` -> (scenarios, noise types, SNRs in dB).

    ``--noise`` and ``--snr`` apply to the noisy scenario only; without them it
    uses :data:`DEFAULT_NOISES` at :data:`DEFAULT_SNRS_DB`. Names and ranges
    are checked by :class:`~benchmark.sweep.SweepConfig`.
    """
    scenarios = tuple(split_list(scenario))
    if not scenarios:
        raise BenchError("--scenario needs at least one of clean, noisy")
    if "noisy" not in scenarios:
        if noise is not None or snr is not None:
            given = [o for o, v in (("--noise", noise), ("--snr", snr)) if v is not None]
            verb = "apply" if len(given) > 1 else "applies"
            raise BenchError(f"{' and '.join(given)} {verb} only to the noisy scenario; add "
                             "--scenario noisy (or --scenario clean,noisy)")
        return scenarios, (), ()
    noises = tuple(split_list(DEFAULT_NOISES if noise is None else noise))
    if not noises:
        raise BenchError("--noise needs at least one noise type, e.g. --noise ssn")
    snrs = []
    for item in split_list(DEFAULT_SNRS_DB if snr is None else snr):
        try:
            snrs.append(float(item))
        except ValueError:
            raise BenchError(f"--snr: {item!r} is not a number (use e.g. 0,5,10)") from None
    if not snrs:
        raise BenchError("--snr needs at least one SNR in dB, e.g. --snr 5")
    return scenarios, noises, tuple(snrs)
