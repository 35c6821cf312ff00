"""Front end ``hf``: any transformers audio encoder from a local directory.

The directory is what ``save_pretrained`` writes (``config.json``, the weights
and, if present, ``preprocessor_config.json``). It is loaded with
``local_files_only=True``: nothing is downloaded. The front end returns
``hidden_states`` (the embedding output and every layer's output), so
``n_layers = num_hidden_layers + 1``. If the directory has a feature
extractor it is applied first (e.g. wav2vec 2.0's per-clip zero-mean,
unit-variance normalisation); the presentation level then reaches HAAQI-Net
only through its ``spl_db`` input. Encoder-decoder models use their encoder.

transformers imports torchaudio when it looks installed. A torchaudio built
for another torch minor version crashes on import, so in that case this module
marks torchaudio as absent (``sys.modules["torchaudio"] = None``) before
importing transformers.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import torch

from benchmark.errors import BenchError
from haaqinet.frontends import Frontend


def _hide_mismatched_torchaudio() -> None:
    if "torchaudio" in sys.modules:
        return
    try:
        audio_version = importlib.metadata.version("torchaudio")
    except importlib.metadata.PackageNotFoundError:
        return
    if audio_version.split(".")[:2] != torch.__version__.split("+")[0].split(".")[:2]:
        sys.modules["torchaudio"] = None  # makes `import torchaudio` an ImportError, find_spec None


def _import_transformers():
    _hide_mismatched_torchaudio()
    try:
        import transformers
    except ImportError as exc:
        raise BenchError(f"the 'hf' front end needs transformers (pip install transformers): {exc}") from None
    return transformers


class HFFrontend(Frontend):
    """A transformers audio encoder giving all hidden states.

    Args:
        model_dir: local directory written by ``save_pretrained``.

    Attributes:
        n_layers: ``num_hidden_layers + 1`` (embeddings, then each layer).
        dim: hidden size.
        frames_per_second: from the convolutional strides, or measured on 1 s of silence.
    """

    external_weights = True
    weights_arg = "model_dir"
    wants_calibrated_input = False

    def __init__(self, model_dir: str):
        super().__init__()
        self.model_dir = str(model_dir)
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise BenchError(
                f"hf front end: {path} is not a transformers model directory (no config.json); "
                f"give the folder written by save_pretrained"
            )
        transformers = _import_transformers()
        try:
            model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # missing weights, unknown architecture, shape mismatch
            raise BenchError(
                f"hf front end: cannot load a model from {path}: {type(exc).__name__}: {exc}"
            ) from None
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        self.encoder = model.eval()
        self.feature_extractor = None
        if (path / "preprocessor_config.json").is_file():
            try:
                self.feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(
                    str(path), local_files_only=True
                )
            except Exception as exc:
                raise BenchError(f"hf front end: bad feature extractor in {path}: {exc}") from None
            rate = getattr(self.feature_extractor, "sampling_rate", 16000)
            if rate != self.sample_rate_hz:
                raise BenchError(f"hf front end: {path} expects {rate} Hz audio; HAAQI-Net feeds 16000 Hz")
        self._accepted = set(inspect.signature(self.encoder.forward).parameters)
        config = self.encoder.config
        self.dim = int(getattr(config, "hidden_size", None) or getattr(config, "d_model"))
        self.n_layers = int(config.num_hidden_layers) + 1
        strides = getattr(config, "conv_stride", None)
        if strides:
            self.frames_per_second = self.sample_rate_hz / math.prod(strides)
        else:
            with torch.no_grad():
                n = len(self(torch.zeros(1, self.sample_rate_hz))[0][0])
            self.frames_per_second = float(n)

    def _inputs(self, waveform_16k: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.feature_extractor is None:
            return {"input_values": waveform_16k}
        batch = [row for row in waveform_16k.detach().cpu().numpy().astype(np.float32)]
        features = self.feature_extractor(batch, sampling_rate=self.sample_rate_hz, return_tensors="pt")
        return {k: v.to(waveform_16k.device) for k, v in features.items() if k in self._accepted}

    def forward(self, waveform_16k: torch.Tensor) -> list[torch.Tensor]:
        """(B, n_samples) -> n_layers hidden states, each (B, T, dim)."""
        out = self.encoder(**self._inputs(waveform_16k), output_hidden_states=True, return_dict=True)
        hidden = getattr(out, "hidden_states", None)
        if not hidden:
            raise BenchError(f"hf front end: the model in {self.model_dir} returns no hidden_states")
        return list(hidden)

    def n_frames(self, n_samples: int) -> int:
        lengths = getattr(self.encoder, "_get_feat_extract_output_lengths", None)
        if lengths is not None:
            return int(lengths(torch.tensor(n_samples)))
        return int(n_samples / self.sample_rate_hz * self.frames_per_second)
