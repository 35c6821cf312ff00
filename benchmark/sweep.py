"""Sweep configuration, trials and jobs: config -> trials.

A *trial* is one row of the results table: clip × listener × ear × SPL ×
processor configuration. A *job* is the unit of work a worker runs: one clip
for one listener at one SPL through every processor of the sweep; it
processes the stereo excerpt once per processor and scores each ear against
one shared reference, so it yields one trial per (processor, ear).

Seeds are stable hashes of keys, so reruns and any executor give
bit-identical scores:

* the processor's ``rng`` is seeded from (clip, listener, SPL, processor id);
* HAAQI's threshold noise is seeded from the trial key *without* the
  processor, so every processor of a (clip, listener, ear, SPL) is scored with
  the same noise (common random numbers: differences between processors are
  not blurred by noise draws).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from benchmark.audiogram import Listener
from benchmark.calibration import check_spl
from benchmark.errors import BenchError

EARS = ("left", "right")
REFERENCE_CONVENTIONS = {
    # name: (what the reference is, HAAQI equalisation mode)
    "nalr": ("clean excerpt through NAL-R for the ear's audiogram", 2),
    "clean": ("clean excerpt; HAAQI applies NAL-R itself", 1),
}


def stable_hash(obj, n_hex: int = 16) -> str:
    """Hex sha256 of the canonical JSON of ``obj``, truncated."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n_hex]


def seed_of(*parts) -> int:
    """A 32-bit seed from a stable hash of ``parts``."""
    return int(stable_hash(list(parts), 8), 16)


@dataclass(frozen=True)
class ProcessorSpec:
    """A processor name (or ``file.py:Class``) with its parameter overrides."""

    name: str
    params: tuple[tuple[str, str], ...] = ()

    def create(self):
        from processors import registry

        return registry.create(self.name, dict(self.params))


@dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a run's results. Its hash names the run."""

    processors: tuple[ProcessorSpec, ...]
    spls_db: tuple[float, ...]
    listeners: tuple[Listener, ...]
    corpus: str = "builtin"
    excerpt_s: float = 10.0
    reference: str = "nalr"
    haaqi_backend: str = "fast"
    haaqinet_checkpoint: str | None = "default"
    limit_clips: int | None = None
    ears: tuple[str, ...] = EARS

    def __post_init__(self) -> None:
        if not self.processors:
            raise BenchError("no processors given")
        if not self.spls_db:
            raise BenchError("no SPLs given")
        object.__setattr__(self, "spls_db", tuple(check_spl(s) for s in self.spls_db))
        if not self.listeners:
            raise BenchError("no listeners/audiograms given")
        names = [ls.name for ls in self.listeners]
        if len(set(names)) != len(names):
            raise BenchError(f"listener names must be unique, got {names}")
        if self.reference not in REFERENCE_CONVENTIONS:
            raise BenchError(f"unknown reference convention {self.reference!r}; "
                             f"choose {' or '.join(REFERENCE_CONVENTIONS)}")
        if not 0.5 <= self.excerpt_s <= 120:
            raise BenchError(f"excerpt length {self.excerpt_s} s is out of range 0.5..120 s")
        if self.limit_clips is not None and self.limit_clips < 1:
            raise BenchError("--limit must be at least 1")
        bad = [e for e in self.ears if e not in EARS]
        if bad or not self.ears:
            raise BenchError(f"ears must be among {EARS}, got {self.ears}")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def config_hash(self) -> str:
        return stable_hash(self.as_dict(), 12)

    @property
    def equalisation(self) -> int:
        return REFERENCE_CONVENTIONS[self.reference][1]


@dataclass(frozen=True)
class Job:
    """One unit of work: a clip for one listener at one SPL through several processors.

    The clean excerpt is loaded and calibrated once, each processor runs once
    on the stereo signal, and every ear is scored with one HAAQI reference
    shared by all the processors (``haaqi.score_many``).
    """

    clip_id: str
    listener: str
    spl_db: float
    processor_ids: tuple[str, ...]
    ears: tuple[str, ...] = EARS

    @property
    def key(self) -> str:
        return f"{self.clip_id}|{self.listener}|{self.spl_db:g}|{'+'.join(self.processor_ids)}"

    def trial_keys(self) -> list[str]:
        return [trial_key(self.clip_id, self.listener, ear, self.spl_db, pid)
                for pid in self.processor_ids for ear in self.ears]

    def processor_seed(self, processor_id: str) -> int:
        return seed_of("processor", self.clip_id, self.listener, f"{self.spl_db:g}", processor_id)

    def haaqi_seed(self, ear: str) -> int:
        return seed_of("haaqi", self.clip_id, self.listener, ear, f"{self.spl_db:g}")

    def only(self, processor_ids) -> "Job":
        """The same job restricted to some processors (for resuming)."""
        return replace(self, processor_ids=tuple(p for p in self.processor_ids if p in processor_ids))


def trial_key(clip_id: str, listener: str, ear: str, spl_db: float, processor_id: str) -> str:
    """The unique key of one results row."""
    return f"{clip_id}|{listener}|{ear}|{spl_db:g}|{processor_id}"


@dataclass
class Plan:
    """The expanded sweep: processors instantiated, jobs listed in a fixed order."""

    config: SweepConfig
    processors: dict = field(default_factory=dict)  # processor_id -> Processor
    jobs: list[Job] = field(default_factory=list)


def plan_jobs(config: SweepConfig, clip_ids: list[str]) -> Plan:
    """Expand a config over clips into jobs (deterministic order)."""
    processors = {}
    for spec in config.processors:
        proc = spec.create()
        if proc.config_id in processors:
            raise BenchError(f"processor {spec.name!r} is listed twice with the same parameters")
        processors[proc.config_id] = proc
    jobs = [
        Job(clip, listener.name, spl, tuple(processors), tuple(config.ears))
        for clip in clip_ids
        for listener in config.listeners
        for spl in config.spls_db
    ]
    return Plan(config, processors, jobs)
