"""Sweep configuration, trials and jobs: config -> trials.

A *trial* is one row of the results table: clip × listener × ear × SPL ×
listening condition × processor configuration. A *listening condition* is
the clean scenario or one (noise type, SNR) of the noisy scenario
(:class:`Condition`). A *job* is the unit of work a worker runs: one clip
for one listener at one SPL in one condition through every processor of the
sweep; it processes the stereo excerpt (or mixture) once per processor and
scores each ear against one shared reference, so it yields one trial per
(processor, ear).

Seeds are stable hashes of keys, so reruns and any executor give
bit-identical scores:

* the processor's ``rng`` is seeded from (clip, listener, SPL, processor id)
  and, in a noisy condition, the condition (``ssn@5dB``);
* HAAQI's threshold noise is seeded from the trial key *without* the
  processor, so every processor of a (clip, listener, ear, SPL) is scored with
  the same noise (common random numbers: differences between processors are
  not blurred by noise draws).
* the background noise of a noisy condition is seeded from (clip, noise
  type) only: every SNR, listener, SPL and processor hears the same noise
  realisation.

Clean trials keep the key and seed formats they had before noisy scenarios
existed, and a clean-only config hashes as before, so old runs resume.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from benchmark.audiogram import Listener
from benchmark.calibration import check_spl
from benchmark.errors import BenchError
from benchmark.noise import check_noise, check_snr

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


#: Listening scenarios.
SCENARIOS = ("clean", "noisy")


@dataclass(frozen=True)
class Condition:
    """A listening condition: the clean scenario, or a noise type at an SNR.

    Attributes:
        scenario: "clean" or "noisy".
        noise: the noise type ("none" when clean).
        snr_db: the SNR in dB (None when clean).
    """

    scenario: str = "clean"
    noise: str = "none"
    snr_db: float | None = None

    @property
    def is_clean(self) -> bool:
        return self.scenario == "clean"

    @property
    def tag(self) -> str:
        """The part of keys and seeds that names the condition: "" when clean, e.g. "ssn@5dB"."""
        return "" if self.is_clean else f"{self.noise}@{self.snr_db:g}dB"

    @property
    def label(self) -> str:
        """For people: "clean" or e.g. "ssn 5 dB SNR"."""
        return "clean" if self.is_clean else f"{self.noise} {self.snr_db:g} dB SNR"


CLEAN = Condition()


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
    clip_ids: tuple[str, ...] | None = None
    ears: tuple[str, ...] = EARS
    scenarios: tuple[str, ...] = ("clean",)
    noises: tuple[str, ...] = ()
    snrs_db: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self._check_scenarios()
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
        if self.clip_ids is not None:
            object.__setattr__(self, "clip_ids", tuple(self.clip_ids))
            if not self.clip_ids or len(set(self.clip_ids)) != len(self.clip_ids):
                raise BenchError(f"--clips must name distinct clips, got {', '.join(self.clip_ids) or 'none'}")
        if self.limit_clips is not None and self.limit_clips < 1:
            raise BenchError("--limit must be at least 1")
        bad = [e for e in self.ears if e not in EARS]
        if bad or not self.ears:
            raise BenchError(f"ears must be among {EARS}, got {self.ears}")

    def _check_scenarios(self) -> None:
        from benchmark.registry_util import did_you_mean

        for key in ("scenarios", "noises", "snrs_db"):  # lists would hash differently
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if not self.scenarios:
            raise BenchError("no scenario given; use --scenario clean, noisy or clean,noisy")
        for name in self.scenarios:
            if name not in SCENARIOS:
                raise BenchError(f"unknown scenario {name!r}{did_you_mean(name, SCENARIOS)}; "
                                 f"choose {', '.join(SCENARIOS)}")
        if len(set(self.scenarios)) != len(self.scenarios):
            raise BenchError(f"a scenario is listed twice: {', '.join(self.scenarios)}")
        if "noisy" not in self.scenarios:
            if self.noises or self.snrs_db:
                raise BenchError("--noise and --snr apply to the noisy scenario only; add "
                                 "--scenario noisy (or clean,noisy)")
            return
        if not self.noises or not self.snrs_db:
            raise BenchError("the noisy scenario needs at least one noise type and one SNR")
        for name in self.noises:
            check_noise(name)
        object.__setattr__(self, "snrs_db", tuple(check_snr(s) for s in self.snrs_db))
        if len(set(self.noises)) != len(self.noises):
            raise BenchError(f"a noise type is listed twice: {', '.join(self.noises)}")
        if len(set(self.snrs_db)) != len(self.snrs_db):
            raise BenchError(f"an SNR is listed twice: {', '.join(f'{s:g}' for s in self.snrs_db)}")

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The listening conditions, in sweep order (clean first if listed first)."""
        out = []
        for scenario in self.scenarios:
            if scenario == "clean":
                out.append(CLEAN)
            else:
                out += [Condition("noisy", n, s) for n in self.noises for s in self.snrs_db]
        return tuple(out)

    def as_dict(self) -> dict:
        """The config as a dict; the scenario fields only when not clean-only.

        Leaving them out of a clean-only config keeps its hash (and run id)
        what it was before noisy scenarios existed, so old runs resume.
        """
        out = asdict(self)
        if self.clip_ids is None:  # absent from older configs: keep their hash
            out.pop("clip_ids")
        if self.scenarios == ("clean",):
            for key in ("scenarios", "noises", "snrs_db"):
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        """The config that :meth:`as_dict` wrote (a run's ``run.json``); its hash is the run's.

        Raises:
            BenchError: the dict is not a sweep configuration.
        """
        from benchmark.audiogram import Audiogram

        def audiogram(a: dict) -> Audiogram:
            return Audiogram(tuple(a["levels_db_hl"]), tuple(a["frequencies_hz"]), a["name"])

        try:
            fields = dict(d)
            fields["processors"] = tuple(ProcessorSpec(p["name"], tuple(tuple(kv) for kv in p["params"]))
                                         for p in d["processors"])
            fields["listeners"] = tuple(Listener(ls["name"], audiogram(ls["left"]), audiogram(ls["right"]))
                                        for ls in d["listeners"])
            for key in ("spls_db", "ears", "scenarios", "noises", "snrs_db"):
                if key in fields:
                    fields[key] = tuple(fields[key])
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise BenchError(f"not a sweep configuration ({type(exc).__name__}: {exc})") from None

    @property
    def config_hash(self) -> str:
        return stable_hash(self.as_dict(), 12)

    @property
    def equalisation(self) -> int:
        return REFERENCE_CONVENTIONS[self.reference][1]


@dataclass(frozen=True)
class Job:
    """One unit of work: a clip for one listener at one SPL in one condition through several processors.

    The clean excerpt is loaded (and, in a noisy condition, mixed with its
    noise) and calibrated once, each processor runs once on the stereo
    signal, and every ear is scored with one HAAQI reference shared by all
    the processors (``haaqi.score_many``).
    """

    clip_id: str
    listener: str
    spl_db: float
    processor_ids: tuple[str, ...]
    ears: tuple[str, ...] = EARS
    condition: Condition = CLEAN

    def _with_condition(self, *parts) -> tuple:
        return parts if self.condition.is_clean else (*parts, self.condition.tag)

    @property
    def key(self) -> str:
        parts = self._with_condition(self.clip_id, self.listener, f"{self.spl_db:g}")
        return "|".join((*parts, "+".join(self.processor_ids)))

    def trial_keys(self) -> list[str]:
        return [trial_key(self.clip_id, self.listener, ear, self.spl_db, pid, self.condition)
                for pid in self.processor_ids for ear in self.ears]

    def processor_seed(self, processor_id: str) -> int:
        return seed_of("processor", *self._with_condition(
            self.clip_id, self.listener, f"{self.spl_db:g}", processor_id))

    def haaqi_seed(self, ear: str) -> int:
        return seed_of("haaqi", *self._with_condition(self.clip_id, self.listener, ear,
                                                      f"{self.spl_db:g}"))

    @property
    def noise_seed(self) -> int | None:
        """Seed of the background noise: (clip, noise type) only; None when clean."""
        return None if self.condition.is_clean else noise_seed(self.clip_id, self.condition.noise)

    def only(self, processor_ids) -> "Job":
        """The same job restricted to some processors (for resuming)."""
        return replace(self, processor_ids=tuple(p for p in self.processor_ids if p in processor_ids))


def noise_seed(clip_id: str, noise: str) -> int:
    """The seed of a clip's background noise of one type (the same for every SNR)."""
    return seed_of("noise", clip_id, noise)


def trial_key(clip_id: str, listener: str, ear: str, spl_db: float, processor_id: str,
              condition: Condition = CLEAN) -> str:
    """The unique key of one results row.

    Clean: ``clip|listener|ear|spl|processor`` (as always); noisy:
    ``clip|listener|ear|spl|noise@SNRdB|processor``.
    """
    if condition.is_clean:
        return f"{clip_id}|{listener}|{ear}|{spl_db:g}|{processor_id}"
    return f"{clip_id}|{listener}|{ear}|{spl_db:g}|{condition.tag}|{processor_id}"


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
        Job(clip, listener.name, spl, tuple(processors), tuple(config.ears), condition)
        for clip in clip_ids
        for listener in config.listeners
        for spl in config.spls_db
        for condition in config.conditions
    ]
    return Plan(config, processors, jobs)
