"""The package tree is the architecture (ARCHITECTURE.md): each module imports only from its own folder or from a
lower layer, so the layers form a chain with no cycle. An import against the direction fails here, naming it."""

from __future__ import annotations

import ast
from pathlib import Path

import ddpm

PACKAGE = Path(ddpm.__file__).parent

# Lower number = lower layer. A folder (or top-level module) may import from a lower layer and from itself.
LAYERS: dict[str, int] = {
    "common": 0,
    "config": 1, "presets": 1,
    "diffusion": 2, "network": 2,
    "pictures": 3, "runtime": 3,
    "data": 4,
    "text": 5,
    "training": 6,
    "api": 7,
    "launch": 8, "resolve": 8, "evaluation": 8, "serve": 8,
    "demo": 9,
    "cli": 10,
    "__init__": 11, "__main__": 11,
}


def _part(module: str) -> str:
    """ddpm.diffusion.sampler -> diffusion; ddpm.api -> api; ddpm -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (ddpm imports are absolute)"
            if node.module and (node.module == "ddpm" or node.module.startswith("ddpm.")):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name == "ddpm" or a.name.startswith("ddpm.")]
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert parts == set(LAYERS), f"unlisted: {sorted(parts - set(LAYERS))}; gone: {sorted(set(LAYERS) - parts)}"


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for path in _modules():
        mine = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for line, module in _imports(path):
            theirs = _part(module)
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module} (layer {LAYERS[theirs]} >= {LAYERS[mine]})")
    assert not wrong, "\n".join(wrong)


def test_common_imports_nothing_else_of_the_project() -> None:
    """common/ holds the leaf primitives (errors, atomic files, seeds, pixel ranges): any module may use them."""
    for path in (PACKAGE / "common").glob("*.py"):
        others = [m for _, m in _imports(path) if not m.startswith("ddpm.common")]
        assert not others, f"{path.name} imports {others}"
