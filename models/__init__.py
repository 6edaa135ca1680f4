"""PyTorch side of mcelsim: QAT layers, losses, model zoo, datasets, training, checkpoints.

Public names resolve lazily, so `import models.datasets` (numpy only) never imports torch.
"""

from __future__ import annotations

import importlib

# public name -> module that defines it
_EXPORTS = {
    "mcel_loss": "models.losses",
    "mhl_loss": "models.losses",
    "ce_loss": "models.losses",
    "mean_logit_margin": "models.losses",
    "build_model": "models.zoo",
    "ARCHITECTURES": "models.zoo",
    "load_checkpoint": "models.checkpoint",
    "save_checkpoint": "models.checkpoint",
    "load_dataset": "models.datasets",
    "DATASETS": "models.datasets",
    "Dataset": "models.datasets",
    "train": "models.training",
    "TrainConfig": "models.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
