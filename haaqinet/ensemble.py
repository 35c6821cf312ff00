"""An ensemble of HAAQI-Nets: the mean of several trained networks' scores.

Networks trained on other data or with other front-end maps make partly independent errors, so the mean of
their predictions agrees with HAAQI better than any one of them (``docs/haaqinet-data.md``, session 12). An
ensemble is a checkpoint like any other (``bench haaqinet ensemble`` writes one; ``load_checkpoint`` reads
it; ``predict``, ``evaluate``, ``spl-study`` and ``bench run`` use it as they use one network). Training,
distillation and fine-tuning work on one network and refuse an ensemble (:func:`require_network`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from benchmark.errors import BenchError
from haaqinet.model import HAAQINet


class MeanOf(nn.Module):
    """Called like a HAAQI-Net: the mean clip scores (B,) and frame scores (B, T) of ``members``."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, waveform_16k: torch.Tensor, audiogram_db_hl: torch.Tensor, spl_db: torch.Tensor,
                n_samples: torch.Tensor | None = None, *,
                input_spl_db: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [m(waveform_16k, audiogram_db_hl, spl_db, n_samples, input_spl_db=input_spl_db)
                   for m in self.members]
        clip = torch.stack([c for c, _ in outputs]).mean(0)
        frames = torch.stack([f for _, f in outputs]).mean(0)
        return clip, frames


class HAAQINetEnsemble(MeanOf):
    """The mean of ``len(members)`` HAAQI-Nets, each rebuilt from its ``model_args``.

    Members must read frames at one rate (their frame scores are averaged frame by frame) and keep their
    front-end weights in the checkpoint (no external BEATs or transformers encoder).
    """

    model_name = "HAAQINetEnsemble"

    def __init__(self, members: list[dict]):
        if len(members) < 2:
            raise BenchError(f"an ensemble needs at least 2 networks, got {len(members)}")
        nets = [HAAQINet(**args) for args in members]
        rates = {net.frontend.frames_per_second for net in nets}
        if len(rates) > 1:
            raise BenchError(f"ensemble members must read frames at one rate, got {sorted(rates)} per second")
        if not all(net.stores_frontend_weights for net in nets):
            raise BenchError("ensemble members must store their front-end weights (no external encoder)")
        super().__init__(nets)

    @property
    def model_args(self) -> dict:
        """Constructor arguments: ``HAAQINetEnsemble(**model.model_args)`` rebuilds the ensemble."""
        return {"members": [net.model_args for net in self.members]}

    @property
    def stores_frontend_weights(self) -> bool:
        return True

    @property
    def input_level(self) -> bool:
        """Whether every member takes the clean music's presentation level."""
        return all(getattr(m, "input_level", False) for m in self.members)

    @classmethod
    def of(cls, networks: list[HAAQINet]) -> "HAAQINetEnsemble":
        """An ensemble holding copies of the weights of ``networks``."""
        for net in networks:
            require_network(net, "an ensemble member")
        ensemble = cls([net.model_args for net in networks])
        for mine, theirs in zip(ensemble.members, networks):
            mine.load_state_dict(theirs.state_dict())
        return ensemble.eval()


def require_network(model: nn.Module, what: str, path: str | Path | None = None) -> HAAQINet:
    """``model`` if it is one HAAQI-Net; a clear error for an ensemble (``what``: the use, for the message)."""
    if isinstance(model, HAAQINetEnsemble):
        where = f"{Path(path).name} is" if path is not None else "this checkpoint is"
        raise BenchError(f"{where} an ensemble of {len(model.members)} networks; {what} needs one network: "
                         f"give one of its members (or the single teacher: 'teacher')")
    return model


def build(checkpoints: list, out_path: str | Path, *, data_folder: str | Path | None = None, workers: int = 1,
          log=print) -> tuple[HAAQINetEnsemble, dict]:
    """Write the ensemble of ``checkpoints`` (paths or names) to ``out_path`` with its JSON sidecar; returns
    it and its evaluation report (empty without ``data_folder``).

    With ``data_folder``, the ensemble is evaluated on that data set's held-out splits and the sidecar gets
    the same metrics as a trained checkpoint's. The sidecar lists every member: file, SHA-256 and its own
    validation and test figures as its sidecar records them.
    """
    import hashlib
    import json

    from haaqinet import data
    from haaqinet.checkpoint import load_checkpoint, save_checkpoint
    from haaqinet.evaluate import EVAL_SPLITS, evaluate
    from haaqinet.predict import resolve_checkpoint
    from haaqinet.train import recipe_hash

    paths = [resolve_checkpoint(c) for c in checkpoints]
    for path in paths:
        if not path.is_file():
            raise BenchError(f"HAAQI-Net checkpoint not found: {path}")
    ensemble = HAAQINetEnsemble.of([require_network(load_checkpoint(p), "an ensemble member", p) for p in paths])
    members = []
    for path in paths:
        sidecar = Path(f"{path}.json")
        doc = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        per_split = (doc.get("metrics") or {}).get("per_split", {})
        trained = doc.get("extra") or {}
        members.append({"file": path.name, "path": str(path),
                        "sha256_12": hashlib.sha256(path.read_bytes()).hexdigest()[:12],
                        "per_split": {s: per_split[s] for s in ("val", "test") if s in per_split},
                        "training": trained.get("training"),
                        "data_recipe_sha256_16": (trained.get("data") or {}).get("recipe_sha256_16"),
                        "git_commit": doc.get("git_commit")})
    rep, metrics, extra = {}, None, {"members": members}
    if data_folder is not None:
        log(f"evaluating the mean of {len(paths)} networks on {data_folder}")
        rep, _ = evaluate(ensemble, Path(data_folder), splits=EVAL_SPLITS, workers=workers)
        metrics = {k: rep[k] for k in ("per_split", "per_spl", "per_severity", "clean_nalr", "targets")}
        recipe = data.read_recipe(Path(data_folder))
        extra["data"] = {"folder": str(data_folder), "recipe_sha256_16": recipe_hash(recipe)}
    save_checkpoint(out_path, ensemble, metrics=metrics, extra=extra)
    return ensemble, rep
