"""The layers import downward only: protocol is sans-IO, actors never does I/O.

Every module under protocol/ and actors/ is parsed (not imported) and each
``import`` and ``from ... import`` is resolved, relative ones included, to the
top-level package it reaches.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "protocol": {
        "trio",
        "trio_websocket",
        "wsproto",
        "redis",
        "socket",
        "asyncio",
        "actors",
        "relay",
    },
    "actors": {"relay", "redis", "trio_websocket", "wsproto", "socket"},
}


def module_name(path: Path) -> str:
    """The dotted module name of a file under ROOT (a package is its __init__)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """Every module that ``source`` (the text of ``module``) imports, absolute,
    with its line number. ``from a import b`` names both ``a`` and ``a.b``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    raise ValueError(f"{module}:{node.lineno}: relative import beyond the top")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target:
                found.append((node.lineno, target))
            found.extend(
                (node.lineno, f"{target}.{alias.name}" if target else alias.name)
                for alias in node.names
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        is_package = path.name == "__init__.py"
        for lineno, target in imported_modules(source, module, is_package=is_package):
            top = target.partition(".")[0]
            if top in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {target}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer):
    files = list((ROOT / layer).rglob("*.py"))
    assert files, f"no modules found under {layer}/"
    assert violations(layer) == []


# -- the checker itself ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("import trio", "protocol._codec", False, "trio"),
        ("import os, trio.lowlevel as ll", "protocol._codec", False, "trio.lowlevel"),
        ("from socket import socket", "protocol._codec", False, "socket"),
        ("from .. import relay", "protocol._codec", False, "relay"),
        ("from ..relay import x", "protocol._codec", False, "relay"),
        ("from ...relay._store import x", "actors.quiz._rules", False, "relay._store"),
        ("from ... import relay", "actors.quiz", True, "relay"),
        ("from .. import relay", "actors.quiz", True, "actors.relay"),
        ("from . import _codec", "protocol", True, "protocol._codec"),
        ("from ._frames import Frame", "protocol._codec", False, "protocol._frames"),
        ("def f():\n    import redis\n", "actors._logic", False, "redis"),
        ("if TYPE_CHECKING:\n    import asyncio\n", "protocol._frames", False, "asyncio"),
        ("importlib.import_module('wsproto')", "protocol._codec", False, "wsproto"),
        ("__import__('socket')", "actors._clock", False, "socket"),
    ],
)
def test_imports_are_resolved(source, module, is_package, expected):
    targets = [t for _, t in imported_modules(source, module, is_package=is_package)]
    assert expected in targets


def test_relative_import_beyond_the_top_is_an_error():
    with pytest.raises(ValueError):
        imported_modules("from ... import x", "protocol._codec", is_package=False)


def test_violations_are_reported(tmp_path, monkeypatch):
    (tmp_path / "protocol").mkdir()
    (tmp_path / "protocol" / "__init__.py").write_text("from ._io import x\n")
    (tmp_path / "protocol" / "_io.py").write_text("import trio\nfrom ..relay import y\n")
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "_ok.py").write_text("import trio\nfrom protocol import Frame\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("protocol") == [
        "protocol/_io.py:1 imports trio",
        "protocol/_io.py:2 imports relay",
        "protocol/_io.py:2 imports relay.y",
    ]
    assert violations("actors") == []
