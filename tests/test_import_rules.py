"""Enforces DESIGN.md §3: which package may import what (parsed from the source, not guessed)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# folder -> (allowed at module level, allowed only inside functions)
RULES: dict[str, tuple[set[str], set[str]]] = {
    "radix_cache": ({"radixlm.radix_cache"}, set()),
    "constrained": (
        {"radixlm.constrained", "numpy", "outlines_core", "interegular"},
        {"xgrammar", "llguidance"},
    ),
    "kernels": ({"radixlm.kernels", "torch", "triton"}, {"flashinfer"}),
}
FRONTEND_FORBIDDEN = {"torch", "triton", "flashinfer", "transformers"}
# Runtime modules that run in the light HTTP/launcher process or the detokenizer.
LIGHT_RUNTIME_MODULES = [
    "radixlm.runtime.server",
    "radixlm.runtime.http_server",
    "radixlm.runtime.tokenizer_manager",
    "radixlm.runtime.launcher",
    "radixlm.runtime.detokenizer",
    "radixlm.runtime.cli",
]


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported module, is_module_level) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` never run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            module_level.update(id(n) for n in ast.walk(node))
            for n in ast.walk(node):
                n._type_checking = True  # type: ignore[attr-defined]
    found = []
    for node in ast.walk(tree):
        if getattr(node, "_type_checking", False):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.extend((name, id(node) in module_level) for name in names)
    return found


def allowed(name: str, prefixes: set[str]) -> bool:
    return name.split(".")[0] in STDLIB or any(
        name == p or name.startswith(p + ".") for p in prefixes
    )


@pytest.mark.parametrize("folder", sorted(RULES))
def test_pure_packages_import_only_what_design_allows(folder):
    top_level, lazy = RULES[folder]
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name, at_module_level in imports_of(path):
            ok = allowed(name, top_level) or (not at_module_level and allowed(name, lazy))
            assert ok, f"{path.relative_to(ROOT)} imports {name} (module level: {at_module_level})"


def test_frontend_never_imports_torch_and_runtime_only_lazily():
    for path in sorted((ROOT / "frontend").rglob("*.py")):
        for name, at_module_level in imports_of(path):
            assert name.split(".")[0] not in FRONTEND_FORBIDDEN, f"{path.name} imports {name}"
            if name.startswith("radixlm.runtime"):
                assert not at_module_level, f"{path.name} imports {name} at module level"


@pytest.mark.parametrize("module", ["radixlm", *LIGHT_RUNTIME_MODULES])
def test_light_modules_do_not_load_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch loaded'"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
