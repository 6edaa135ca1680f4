"""Rules of the code base that a grep can keep true (style guide items 1, 6, 9, 15)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("memory_models", "models", "simulator", "analysis")


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def test_no_fastmath_in_bit_exact_code():
    offenders = [
        str(p) for p in _sources(*PACKAGES) if re.search(r"fastmath\s*=\s*True", p.read_text())
    ]
    assert offenders == []


def test_no_unsafe_deserialization():
    pattern = re.compile(r"(^|[^_\w])pickle\.loads?\(|torch\.load\((?![^)]*weights_only=True)")
    offenders = [str(p) for p in _sources(*PACKAGES) if pattern.search(p.read_text())]
    assert offenders == []


def test_no_global_numpy_rng_in_libraries():
    pattern = re.compile(
        r"np\.random\.(seed|rand|randn|randint|random|choice|shuffle|normal|uniform)\("
    )
    offenders = [str(p) for p in _sources(*PACKAGES) if pattern.search(p.read_text())]
    assert offenders == []


def test_no_print_in_library_code():
    # The CLI layer (simulator/cli.py, simulator/commands/) is where output is written.
    pattern = re.compile(r"^\s*print\(", re.M)
    lib = [p for p in _sources(*PACKAGES) if "commands" not in p.parts and p.name != "cli.py"]
    offenders = [str(p) for p in lib if pattern.search(p.read_text())]
    assert offenders == []


# Modules that may import torch: the importers (PyTorch, PTQ, ONNX, Brevitas), the int8 GEMM
# backend (on first use, not at import) and the CLI commands that train or import.
TORCH_ALLOWED = ("simulator.importer", "simulator.ptq", "simulator.ptq_observe",
                 "simulator.onnx_import",
                 "simulator.brevitas_import", "simulator.commands", "simulator.cli")


def test_torch_only_in_importer_and_int8_backend():
    pattern = re.compile(r"^\s*(import torch|from torch)", re.M)
    allowed = {"importer.py", "ptq.py", "ptq_observe.py", "onnx_import.py", "brevitas_import.py",
               "gemm_int8.py", "cli.py"}
    offenders = [str(p) for p in _sources("simulator")
                 if "commands" not in p.parts and p.name not in allowed
                 and pattern.search(p.read_text())]  # fmt: skip
    assert offenders == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("memory_models", ("torch", "matplotlib", "simulator", "models", "analysis")),
        ("simulator", ("torch", "matplotlib", "analysis", "models")),
        ("analysis", ("torch", "simulator", "models")),
    ],
)
def test_imports_run_one_way(package, forbidden):
    """Importing every module of a package pulls in nothing it must not depend on."""
    code = f"""
import importlib, pkgutil, sys
pkg = importlib.import_module({package!r})
for info in pkgutil.walk_packages(pkg.__path__, prefix={package!r} + "."):
    if not info.name.startswith({TORCH_ALLOWED!r}):
        importlib.import_module(info.name)
print(",".join(m for m in {forbidden!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_lists_every_command():
    from simulator.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0


def test_unknown_command_exits_2(capsys):
    from simulator.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice" in err[0]
