"""Self-describing HAAQI-Net checkpoints.

``save_checkpoint`` writes, with ``torch.save``, a dict::

    {"model_name": "HAAQINet",
     "model_args": {...},            # HAAQINet(**model_args) rebuilds the network
     "state_dict": {...},            # see below
     "frontend_reference": None | {"arg", "path", "fingerprint"},
     "versions": {"torch", "numpy", "haaqi-bench"},
     "created": "2025-01-01T00:00:00+00:00",
     "metrics": {...} | None, "extra": {...} | None}

and a JSON sidecar ``<path>.json`` (model_args, metrics, git commit, versions,
parameter counts) that can be read without torch.

A front end with external weights (``beats``, ``hf``) that was frozen is not
stored: BEATs alone is 90 M parameters (360 MB) against 0.8 M for the head,
and its licence is the user's business. The state dict then holds only the
trainable head, and ``frontend_reference`` records the absolute path of the
encoder and a SHA-256 fingerprint of its weights. Loading finds the encoder
at, in order: the ``frontend_path`` argument, the path in ``model_args``, the
recorded absolute path, and a file of the same name beside the checkpoint;
then checks the fingerprint, so a head is never silently paired with another
encoder. Front ends that are trained (``mel``, or an unfrozen encoder) are
stored in full.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import torch

from benchmark.errors import BenchError
from haaqinet.model import HAAQINet, count_parameters

_FRONTEND_PREFIX = "frontend."
_REQUIRED = ("model_name", "model_args", "state_dict")


def package_version() -> str:
    """The installed haaqi-bench version, else the one in pyproject.toml, else "unknown"."""
    try:
        return importlib.metadata.version("haaqi-bench")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
        match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
        return match.group(1) if match else "unknown"


def versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "numpy": str(np.__version__), "haaqi-bench": package_version()}


def git_commit() -> str | None:
    """The commit of the source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of a module's state dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.float()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model: HAAQINet, *, metrics: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Save ``model`` to ``path`` and its JSON sidecar to ``<path>.json``.

    Args:
        path: output file (conventionally ``.pt``); parent folders are created.
        model: the network.
        metrics: optional JSON-serialisable numbers (loss history, LCC, ...).
        extra: optional JSON-serialisable provenance (data set, training config).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    reference = None
    if not model.stores_frontend_weights:
        state = {k: v for k, v in state.items() if not k.startswith(_FRONTEND_PREFIX)}
        arg = model.frontend.weights_arg
        reference = {"arg": arg, "path": str(Path(model.model_args["frontend_args"][arg]).resolve()),
                     "fingerprint": weights_fingerprint(model.frontend)}
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    package = {"model_name": model.model_name, "model_args": model.model_args, "state_dict": state,
               "frontend_reference": reference, "versions": versions(), "created": created,
               "metrics": metrics, "extra": extra}
    torch.save(package, str(path))
    sidecar = {"model_name": model.model_name, "model_args": model.model_args, "metrics": metrics,
               "extra": extra, "git_commit": git_commit(), "versions": package["versions"], "created": created,
               "frontend_weights_stored": reference is None, "frontend_reference": reference,
               "n_parameters": count_parameters(model),
               "n_trainable_parameters": count_parameters(model, trainable_only=True)}
    Path(f"{path}.json").write_text(json.dumps(sidecar, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _read(path: Path, map_location) -> dict:
    if not path.is_file():
        raise BenchError(f"HAAQI-Net checkpoint not found: {path}")
    try:
        package = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # zip, pickle or format errors
        raise BenchError(f"{path} is not a readable torch checkpoint: {type(exc).__name__}: {exc}") from None
    if not isinstance(package, dict) or any(k not in package for k in _REQUIRED):
        found = sorted(package) if isinstance(package, dict) else type(package).__name__
        raise BenchError(f"{path} is not a HAAQI-Net checkpoint (needs {', '.join(_REQUIRED)}; found {found})")
    if package["model_name"] not in (HAAQINet.model_name, _ENSEMBLE):
        raise BenchError(f"{path} holds a {package['model_name']!r} model, not {HAAQINet.model_name!r} or "
                         f"{_ENSEMBLE!r}")
    return package


def _resolve_frontend(args: dict, reference: dict, path: Path, frontend_path: str | Path | None) -> None:
    arg = reference["arg"]
    candidates = [frontend_path, args["frontend_args"].get(arg), reference["path"],
                  path.parent / Path(reference["path"]).name]
    for candidate in candidates:
        if candidate is not None and Path(candidate).exists():
            args["frontend_args"][arg] = str(candidate)
            return
    raise BenchError(
        f"{path}: its {args['frontend']} encoder weights are not stored in the checkpoint and were not found "
        f"at {reference['path']}; pass frontend_path= (the encoder it was trained with)"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    frontend_path: str | Path | None = None) -> HAAQINet:
    """Rebuild a HAAQI-Net from a checkpoint, in eval mode.

    Args:
        path: file written by :func:`save_checkpoint`.
        map_location: device for the tensors.
        frontend_path: where the external encoder now is, if it moved.

    Raises:
        BenchError: missing file, not a HAAQI-Net checkpoint, missing or different
            encoder, or arguments and weights that do not fit together.
    """
    path = Path(path)
    package = _read(path, map_location)
    if package["model_name"] == _ENSEMBLE:
        return _load_ensemble(path, package, map_location)
    args = dict(package["model_args"])
    args["frontend_args"] = dict(args.get("frontend_args") or {})
    reference = package.get("frontend_reference")
    if reference:
        _resolve_frontend(args, reference, path, frontend_path)
    model = _rebuild(path, HAAQINet, args, package["state_dict"], external_frontend=bool(reference))
    if reference and weights_fingerprint(model.frontend) != reference["fingerprint"]:
        raise BenchError(
            f"{path}: the {args['frontend']} encoder at {args['frontend_args'][reference['arg']]} is not the one "
            f"this head was trained with (fingerprint differs)"
        )
    return model.to(map_location).eval()


_ENSEMBLE = "HAAQINetEnsemble"


def _load_ensemble(path: Path, package: dict, map_location):
    from haaqinet.ensemble import HAAQINetEnsemble

    return _rebuild(path, HAAQINetEnsemble, package["model_args"], package["state_dict"]).to(map_location).eval()


def _rebuild(path: Path, cls, args: dict, state_dict: dict, *, external_frontend: bool = False):
    """``cls(**args)`` with ``state_dict`` loaded, or a BenchError naming ``path`` where they do not fit (the
    weights of an external front end are not in ``state_dict``: ``external_frontend``)."""
    try:
        model = cls(**args)
    except (TypeError, KeyError) as exc:
        raise BenchError(f"{path}: model_args do not fit this version of {cls.__name__}: {exc}") from None
    except BenchError as exc:
        raise BenchError(f"{path}: cannot rebuild the model: {exc}") from None
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:
        raise BenchError(f"{path}: weights do not fit model_args: {str(exc).strip().splitlines()[-1]}") from None
    if external_frontend:
        missing = [k for k in missing if not k.startswith(_FRONTEND_PREFIX)]
    if missing or unexpected:
        raise BenchError(f"{path}: weights do not fit model_args (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model
