"""Shared toy fixtures: a tiny labelled data set and a tiny trained teacher, built once per session."""

from __future__ import annotations

import pytest

#: A tiny HAAQINet (auditory front end) for tests: trains and predicts in well under a second.
TINY_TEACHER = {"frontend": "auditory",
                "frontend_args": {"dim": 16, "n_layers": 2, "n_heads": 2, "ffn_dim": 32},
                "adapter_dim": 8, "lstm_hidden": 4, "attention_dim": 8, "attention_heads": 2}


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory):
    """(data folder, teacher checkpoint): 32 one-second items (every split) of synthetic music, a 2-epoch tiny model."""
    from haaqinet import data
    from haaqinet.train import TrainConfig, train

    root = tmp_path_factory.mktemp("toy-teacher")
    folder = root / "toy"
    sources = data.synthetic_sources(folder, n=4, seconds=1.5)
    fractions = {"train": 0.5, "val": 0.15, "test": 0.2, "unseen-conditions": 0.15}  # seed 7: 3/1/3/1 groups
    data.write_recipe(folder, data.new_recipe(n_items=32, sources=sources, seed=7, item_s=1.0, n_listeners=8,
                                              split_fractions=fractions))
    data.make_data(folder)
    ckpt = root / "teacher.pt"
    cfg = TrainConfig(frontend="auditory", frontend_args=dict(TINY_TEACHER["frontend_args"]),
                      model_args={k: v for k, v in TINY_TEACHER.items() if k not in ("frontend", "frontend_args")},
                      epochs=2, batch_size=4, warmup_steps=2)
    train(folder, ckpt, cfg, log=lambda *_: None)
    return folder, ckpt
