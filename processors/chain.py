"""Processor chains: ``"spectral-gating>nalr>camfit-wdrc"`` runs the stages in order.

A chain is written as registry names (or ``file.py:Class``) joined by ``>``.
``processors.registry.create("a>b>c", params)`` parses it and returns a
:class:`Chain`; nothing else in the benchmark needs to know about chains.

* Every stage gets the same :class:`~processors.base.Presentation` (the
  calibration describes the input of the aid; a stage's gain shows up in the
  next stage's input level, as in a real device).
* Stage ``i`` gets its own generator, seeded with the ``i``-th of
  ``len(stages)`` integers drawn in order from the chain's ``rng``
  (:func:`stage_rngs`), so a chain is reproducible and running the stages by
  hand with :func:`stage_rngs` gives the same output.
* Between stages the output is checked like a processor's final output
  (shape, finite, float32); a failure names the stage.

Parameters of a stage are addressed with the stage's name (as written in the
chain) before the parameter: ``nalr.nfir_taps=440``. If a name occurs more than
once, number the occurrences from 1: ``nalr#2.nfir_taps=440``. On the command
line the processor name comes first, as for any processor:
``--param "spectral-gating>nalr.nalr.nfir_taps=440"``; when the stage name is
not itself a processor of the run, ``--param nalr.nfir_taps=440`` is applied to
the ``nalr`` stage of every chain in the run (see :func:`processors.registry.parse_params`).

The chain's ``config_id`` is ``<a>b>c>-<hash>`` with the hash taken over the
stage names and their parameters, so it is stable across processes and
changes with any stage parameter. Its ``label`` joins the stage labels:
``spectral-gating>nalr(nfir_taps=440)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.errors import AudioError, BenchError
from processors.base import Presentation, Processor, check_output

#: Separates the stages of a chain.
SEPARATOR = ">"
#: Marks the occurrence of a stage name used more than once: ``nalr#2``.
OCCURRENCE = "#"
#: Upper end (exclusive) of the per-stage seeds drawn from the chain's rng.
_SEED_HIGH = 2 ** 63


def is_chain(name: str) -> bool:
    """True if ``name`` is a chain spec (contains ``>``)."""
    return SEPARATOR in str(name)


def split_stages(spec: str) -> list[str]:
    """``"a > b>c"`` -> ``["a", "b", "c"]``; an empty stage is a :class:`BenchError`."""
    parts = [p.strip() for p in str(spec).split(SEPARATOR)]
    for i, part in enumerate(parts):
        if not part:
            raise BenchError(
                f"processor chain {spec!r}: stage {i + 1} of {len(parts)} is empty; "
                f"join processor names with a single '{SEPARATOR}', e.g. spectral-gating>nalr")
    return parts


def stage_keys_of(tokens: list[str]) -> list[str]:
    """The name each stage's parameters are addressed by: the token, or ``token#n`` if repeated."""
    counts = {t: tokens.count(t) for t in tokens}
    seen: dict[str, int] = {}
    keys = []
    for t in tokens:
        seen[t] = seen.get(t, 0) + 1
        keys.append(f"{t}{OCCURRENCE}{seen[t]}" if counts[t] > 1 else t)
    return keys


def stage_rngs(rng: np.random.Generator, n_stages: int) -> list[np.random.Generator]:
    """One generator per stage, seeded by integers drawn in order from ``rng``."""
    seeds = rng.integers(0, _SEED_HIGH, size=n_stages, dtype=np.int64)
    return [np.random.default_rng(int(s)) for s in seeds]


@dataclass(frozen=True)
class Chain(Processor):
    """Processors applied one after the other.

    Attributes:
        stages: the stage processors, in order (at least two, none of them a chain).
    """

    summary = "processors run in order: name>name>... (see docs/processors.md)"

    stages: tuple[Processor, ...]

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        if len(stages) < 2:
            raise BenchError(f"a chain needs at least two stages, got {len(stages)}")
        for s in stages:
            if not isinstance(s, Processor):
                raise BenchError(f"chain stage {s!r} is not a processors.base.Processor")
            if isinstance(s, Chain):
                raise BenchError("a chain cannot contain a chain; list its stages instead")
        object.__setattr__(self, "stages", stages)

    # -- identity ---------------------------------------------------------------------
    @property
    def stage_names(self) -> list[str]:
        """Each stage's registry name (for a ``file.py:Class`` stage, the class's ``name``)."""
        return [type(s).name for s in self.stages]

    @property
    def name(self) -> str:  # type: ignore[override]  # a property here, a ClassVar elsewhere
        """The chain spec, e.g. ``spectral-gating>nalr>camfit-wdrc``."""
        return SEPARATOR.join(self.stage_names)

    @property
    def stage_keys(self) -> list[str]:
        """How parameters address each stage: its name, or ``name#n`` if repeated."""
        return stage_keys_of(self.stage_names)

    def params(self) -> dict[str, Any]:
        """JSON-able: ``{"stages": [{"name": ..., "params": {...}}, ...]}``."""
        return {"stages": [{"name": n, "params": s.params()}
                           for n, s in zip(self.stage_names, self.stages)]}

    @property
    def config_id(self) -> str:
        """``<chain spec>-<8 hex>``, a hash of the stage names and parameters."""
        blob = json.dumps({"chain": self.params()}, sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"

    @property
    def label(self) -> str:
        """The stage labels joined by ``>``, e.g. ``spectral-gating>nalr(nfir_taps=440)``."""
        return SEPARATOR.join(s.label for s in self.stages)

    # -- processing -------------------------------------------------------------------
    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(signal)
        rngs = stage_rngs(rng, len(self.stages))
        for i, (key, stage, stage_rng) in enumerate(zip(self.stage_keys, self.stages, rngs)):
            out = stage.process(x, presentation, rng=stage_rng)
            try:
                x = check_output(out, x)
            except AudioError as exc:
                raise AudioError(f"chain {self.name!r}, stage {i + 1} ({key}): {exc}") from None
        if x is signal:  # never hand the caller's array back
            x = x.copy()
        return x
