"""Resume support of the translator training: atomic writes of ``checkpoint.pt`` and the JSON files,
the RNG states a checkpoint carries, seeding, and the refusal to resume into another setup.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos.config import CosmosConfig
from cosmos.errors import CosmosError

# Changing these between a checkpoint and a re-run would load weights into another architecture
# or silently change the experiment: refuse and ask for a new --out.
_RESUME_MUST_MATCH = (
    "base_channels",
    "levels",
    "disc_channels",
    "disc_layers",
    "image_size",
    "inplane_spacing",
    "segmentor",
    "gan_loss",
    "seg_loss",
    "norm_low_percentile",
    "norm_high_percentile",
)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _atomic_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resume_compatible(saved: dict[str, Any], cfg: CosmosConfig, out: Path) -> None:
    now = cfg.flat("translator")
    diff = [k for k in _RESUME_MUST_MATCH if saved.get(f"translator.{k}") != now.get(f"translator.{k}")]
    if diff:
        pairs = ", ".join(f"{k}: {saved.get('translator.' + k)!r} -> {now.get('translator.' + k)!r}" for k in diff)
        raise CosmosError(
            f"{out}: holds a translator training with a different setup ({pairs}); "
            "use a new --out to train this configuration"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
