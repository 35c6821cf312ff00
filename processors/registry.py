"""Find processors by name, entry point, or ``path/to/file.py:ClassName``.

Built-ins are lazy ``"module:Class"`` entries, so listing them imports only
what is asked for. Third-party packages register more under the entry-point
group ``haaqi_bench.processors``. Parameters are set with
``name.key=value`` strings (``--param nalr.nfir=440``), converted to the
dataclass field's type; an unknown key is an error.

Names joined by ``>`` make a chain (:mod:`processors.chain`):
``create("spectral-gating>nalr", {"nalr.nfir_taps": "440"})`` returns a
:class:`~processors.chain.Chain`. A chain's parameters name their stage
(``stage.key``; ``stage#n.key`` for the n-th of a repeated name).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import typing
from importlib.metadata import entry_points
from pathlib import Path

from benchmark.errors import BenchError
from benchmark.registry_util import did_you_mean
from processors.base import Processor
from processors.chain import Chain, is_chain, split_stages, stage_keys_of

ENTRY_POINT_GROUP = "haaqi_bench.processors"

BUILTIN: dict[str, str] = {
    "unprocessed": "processors.unprocessed:Unprocessed",
    "nalr": "processors.nalr:NALR",
    "nalr-agc": "processors.nalr_agc:NALRAGC",
    "camfit-wdrc": "processors.camfit_wdrc:CamfitWDRC",
    # denoisers and frequency lowering (docs/processors.md)
    "spectral-gating": "processors.spectral_gating:SpectralGating",
    "mmse-stsa": "processors.mmse_stsa:MMSESTSA",
    "deepfilternet": "processors.deepfilternet:DeepFilterNet",
    "rnnoise": "processors.rnnoise:RNNoise",
    "freq-lowering": "processors.freq_lowering:FrequencyLowering",
}


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of all registered processors (built-ins first)."""
    return list(BUILTIN) + sorted(n for n in _entry_points() if n not in BUILTIN)


def _load_from_file(spec: str) -> type[Processor]:
    path_text, _, class_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise BenchError(f"processor file not found: {path}")
    module_name = f"haaqi_bench_plugin_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling need the module registered
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # a broken plugin file: report, don't crash
        raise BenchError(f"cannot import processor file {path}: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, class_name):
        raise BenchError(f"{path} has no class {class_name!r}")
    return getattr(module, class_name)


def get_class(name: str) -> type[Processor]:
    """The processor class for a registry name or ``file.py:ClassName``.

    For a chain ``a>b`` every stage is looked up (an unknown one raises) and
    :class:`~processors.chain.Chain` is returned.
    """
    if is_chain(name):
        for stage in split_stages(name):
            get_class(stage)
        return Chain
    if name.endswith(".py") or (".py:" in name):
        if ":" not in name:
            raise BenchError(f"give the class as well: {name}:ClassName")
        cls = _load_from_file(name)
    elif name in BUILTIN:
        module_name, attr = BUILTIN[name].split(":")
        cls = getattr(importlib.import_module(module_name), attr)
    else:
        eps = _entry_points()
        if name not in eps:
            raise BenchError(
                f"unknown processor {name!r}{did_you_mean(name, available())}; "
                f"`bench ls processors` lists them"
            )
        cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Processor)):
        raise BenchError(f"{name!r} is not a processors.base.Processor subclass")
    return cls


def _convert(value: str, annotation, key: str):
    hints = {"int": int, "float": float, "str": str, "bool": bool}
    target = hints.get(annotation, annotation) if isinstance(annotation, str) else annotation
    origin = typing.get_origin(target)
    try:
        if target is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if origin is tuple or target is tuple or (isinstance(annotation, str) and annotation.startswith("tuple")):
            return tuple(float(v) for v in value.replace(";", ",").split(",") if v)
        if target in (int, float, str):
            return target(value)
    except ValueError:
        raise BenchError(f"parameter {key}={value!r}: expected {getattr(target, '__name__', target)}") from None
    return value


def create(name: str, params: dict[str, str] | None = None) -> Processor:
    """A configured processor; ``params`` maps field names to strings or values.

    For a chain ``"a>b>c"`` the keys are ``stage.field`` (``stage#n.field`` when a
    stage name occurs more than once) and a :class:`~processors.chain.Chain` is returned.
    """
    if is_chain(name):
        return _create_chain(name, params)
    cls = get_class(name)
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    kwargs = {}
    for key, value in params.items():
        if key not in fields:
            raise BenchError(
                f"processor {name!r} has no parameter {key!r}{did_you_mean(key, fields)}; "
                f"parameters: {', '.join(fields) or 'none'}"
            )
        kwargs[key] = _convert(value, fields[key].type, f"{name}.{key}") if isinstance(value, str) else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"processor {name!r}: {exc}") from None


def _create_chain(spec: str, params: dict | None) -> Chain:
    tokens = split_stages(spec)
    keys = stage_keys_of(tokens)
    per_stage: dict[str, dict] = {k: {} for k in keys}
    for key, value in (params or {}).items():
        stage, dot, field = str(key).rpartition(".")
        if not dot or not stage or not field:
            raise BenchError(
                f"processor chain {spec!r}: parameter {key!r} must name its stage, "
                f"stage.key=value, e.g. {keys[-1]}.<key>; stages: {', '.join(keys)}")
        if stage not in per_stage:
            if stage in tokens:  # a repeated name without its occurrence number
                raise BenchError(
                    f"processor chain {spec!r}: {stage!r} occurs {tokens.count(stage)} times; "
                    f"say which with {stage}#1.{field}, {stage}#2.{field}, ...")
            raise BenchError(
                f"processor chain {spec!r} has no stage {stage!r}{did_you_mean(stage, keys)}; "
                f"stages: {', '.join(keys)}")
        per_stage[stage][field] = value
    stages = tuple(create(token, per_stage[key]) for token, key in zip(tokens, keys))
    return Chain(stages)


def _chain_stage_targets(stage: str, processor_names: list[str]) -> list[str]:
    """The chains of the run that have a stage addressed as ``stage``."""
    targets = []
    for name in processor_names:
        if is_chain(name):
            tokens = split_stages(name)
            if stage in stage_keys_of(tokens):
                targets.append(name)
            elif stage in tokens:
                raise BenchError(
                    f"--param: {stage!r} occurs {tokens.count(stage)} times in chain {name!r}; "
                    f"say which with {stage}#1.<key>, {stage}#2.<key>, ...")
    return targets


def parse_params(items: list[str], processor_names: list[str]) -> dict[str, dict[str, str]]:
    """``["nalr.nfir=440"]`` -> ``{"nalr": {"nfir": "440"}}``; names must be among the processors.

    For chains in the run (``a>nalr``), a parameter may give the chain and the stage,
    ``a>nalr.nalr.nfir_taps=440`` -> ``{"a>nalr": {"nalr.nfir_taps": "440"}}``, or
    only the stage, ``nalr.nfir_taps=440``: that goes to the ``nalr`` stage of every
    chain in the run, unless ``nalr`` itself is a processor of the run (then only to it).
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        head, eq, value = item.partition("=")
        name, dot, key = head.rpartition(".")
        if not eq or not dot or not name or not key:
            raise BenchError(f"--param {item!r}: use name.key=value, e.g. nalr.nfir=440")
        if name in processor_names:
            out.setdefault(name, {})[key] = value
            continue
        # a chain of the run and a stage key: "a>nalr.nalr.nfir_taps"
        prefixes = [p for p in processor_names
                    if is_chain(p) and head.startswith(p + ".") and len(head) > len(p) + 1]
        if prefixes:
            chain = max(prefixes, key=len)
            out.setdefault(chain, {})[head[len(chain) + 1:]] = value
            continue
        # a stage of the chains in the run: "nalr.nfir_taps"
        targets = _chain_stage_targets(name, processor_names)
        if targets:
            for chain in targets:
                out.setdefault(chain, {})[f"{name}.{key}"] = value
            continue
        stage_names = sorted({k for p in processor_names if is_chain(p)
                              for k in stage_keys_of(split_stages(p))})
        raise BenchError(
            f"--param {item!r} names processor {name!r}, which is not in this run "
            f"({', '.join(processor_names)}){did_you_mean(name, processor_names + stage_names)}"
        )
    return out


def describe(name: str) -> list[tuple[str, str, object]]:
    """``(field, type, default)`` for each parameter of processor ``name``.

    For a chain the fields are ``stage.field`` (``stage#n.field`` for a repeated name).
    """
    if is_chain(name):
        tokens = split_stages(name)
        return [(f"{key}.{field}", type_, default)
                for token, key in zip(tokens, stage_keys_of(tokens))
                for field, type_, default in describe(token)]
    cls = get_class(name)
    if not dataclasses.is_dataclass(cls):
        return []
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((f.name, str(f.type), default))
    return rows
