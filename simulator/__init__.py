"""Integer inference of quantized networks whose weights are read through emulated memory.

Public names are resolved lazily so that `import simulator` stays cheap and never imports
torch (the PyTorch importer imports it when it is called).
"""

from __future__ import annotations

import importlib

# public name -> module that defines it
_EXPORTS = {
    "IntegerNetwork": "simulator.network",
    "import_torch": "simulator.importer",
    "import_checkpoint": "simulator.importer",
    "quantize": "simulator.ptq",
    "import_onnx": "simulator.onnx_import",
    "import_brevitas": "simulator.brevitas_import",
    "deploy": "simulator.deployment",
    "DeployedNetwork": "simulator.deployment",
    "run_campaign": "simulator.campaign",
    "CampaignSpec": "simulator.spec",
    "ResultStore": "simulator.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
