"""Public faces: each module names what others may use (``__all__``), each package names its
public submodules, and nothing uses another module's private or unlisted names.

Read from the source with ``ast`` (only the first test imports the modules). A line may use a
third party's private attribute if it says why: ``x._y  # private: <reason>``.
"""

from __future__ import annotations

import ast
import importlib
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("codes", "crypto", "middleware", "adapters", "simulators", "renkei")
CLIENTS = ("tests", "bench", "fuzz")

# Modules without ``__all__`` for now (remove an entry once its module has one).
WITHOUT_ALL: frozenset[str] = frozenset()  # modules allowed without __all__ (none)

# Private attributes of third parties that are public in all but name.
PUBLIC_BASES = frozenset({"etree"})  # lxml: etree._Element and its kin are its public types
PUBLIC_ATTRIBUTES = frozenset({"_mapping", "_asdict", "_fields", "_replace", "_make"})  # rows
OPT_OUT = "# private:"


def _files(folders: tuple[str, ...]) -> Iterator[Path]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" not in path.relative_to(ROOT).parts:  # Alembic's own scripts
                yield path


def _product_files() -> list[Path]:
    return list(_files(PACKAGES))


def _all_files() -> list[Path]:
    return list(_files(PACKAGES + CLIENTS))


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(_source(path), str(path))


@cache
def _path_of(module: str) -> Path | None:
    """The source of a project module (a package's ``__init__.py``), if there is one."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def _declared_all(path: Path) -> tuple[str, ...] | None:
    """The names ``__all__`` lists at the top of ``path``, or None without one."""
    for node in _tree(path).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == "__all__" for target in targets):
            return tuple(ast.literal_eval(value))
    return None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _where(path: Path, node: ast.AST) -> str:
    return f"{_relative(path)}:{getattr(node, 'lineno', 0)}"


def _unlisted(module: str, name: str) -> str | None:
    """Why ``name`` of project module ``module`` may not be used by another package, if so."""
    if _is_private(name):
        return f"{module}.{name} is private"
    path = _path_of(module)
    if path is not None and path.name == "__init__.py" and _path_of(f"{module}.{name}"):
        return _unlisted_module(f"{module}.{name}")
    listed = None if path is None else _declared_all(path)
    if listed is not None and name not in listed:
        return f"{name} is not in {module}.__all__"
    return None


def _unlisted_module(module: str) -> str | None:
    """Why project module ``module`` is not public (each package on its way lists the next)."""
    parts = module.split(".")
    for end in range(1, len(parts)):
        package = _path_of(".".join(parts[:end]))
        listed = None if package is None else _declared_all(package)
        if listed is not None and parts[end] not in listed:
            return f"{'.'.join(parts[: end + 1])} is not in {'.'.join(parts[:end])}.__all__"
    return None


def _project_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES and _path_of(name) is not None


def _module_aliases(tree: ast.Module) -> dict[str, str]:
    """The local names bound to project modules by imports (``from middleware import
    messages``, ``import middleware.messages as m``; ``import a.b`` binds ``a``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _project_module(full):
                    aliases[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _project_module(alias.name):
                    bound = alias.asname or alias.name.split(".")[0]
                    aliases[bound] = alias.name if alias.asname else bound
    return aliases


def _module_of(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The project module an expression names (``messages``, ``middleware.messages``)."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        outer = _module_of(node.value, aliases)
        if outer is not None and _project_module(f"{outer}.{node.attr}"):
            return f"{outer}.{node.attr}"
    return None


def _top(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def test_every_product_module_defines_all() -> None:
    """Every product module but the listed exceptions defines ``__all__``, of names it has."""
    problems = []
    for path in _product_files():
        if _relative(path) in WITHOUT_ALL:
            continue
        listed = _declared_all(path)
        if listed is None:
            problems.append(f"{_relative(path)}: no __all__")
            continue
        if len(set(listed)) != len(listed):
            problems.append(f"{_relative(path)}: __all__ lists a name twice")
        if path.name == "__init__.py":
            continue  # a package's names are its submodules: the next test
        module = importlib.import_module(_module_name(path))
        problems += [
            f"{_relative(path)}: __all__ names {name}, not defined"
            for name in listed
            if not hasattr(module, name)
        ]
    assert not problems, "\n".join(problems)


def test_every_package_names_its_public_submodules() -> None:
    """Every package's ``__init__.py`` has ``__all__`` naming existing submodules (or what
    the ``__init__.py`` itself binds)."""
    problems = []
    for path in _product_files():
        if path.name != "__init__.py":
            continue
        package = _module_name(path)
        listed = _declared_all(path)
        if listed is None:
            problems.append(f"{_relative(path)}: no __all__")
            continue
        bound = {
            alias.asname or alias.name
            for node in _tree(path).body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        problems += [
            f"{_relative(path)}: __all__ names {name}, neither a submodule nor bound there"
            for name in listed
            if _path_of(f"{package}.{name}") is None and name not in bound
        ]
    assert not problems, "\n".join(problems)


def test_no_import_of_another_packages_private_or_unlisted_names() -> None:
    """No module imports from another top-level package a private name, a name its module's
    ``__all__`` leaves out, or a submodule its package's ``__all__`` leaves out; nor reaches
    one as an attribute of an imported module."""
    problems = []
    for path in _all_files():
        tree = _tree(path)
        aliases = _module_aliases(tree)
        for node in ast.walk(tree):
            reasons: list[str | None] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if _foreign(node.module, path) and _path_of(node.module) is not None:
                    reasons.append(_unlisted_module(node.module))
                    reasons += [_unlisted(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                reasons += [
                    _unlisted_module(alias.name)
                    for alias in node.names
                    if _foreign(alias.name, path) and _project_module(alias.name)
                ]
            elif isinstance(node, ast.Attribute):
                module = _module_of(node.value, aliases)
                if module is not None and _foreign(module, path):
                    reasons.append(_unlisted(module, node.attr))
            problems += [f"{_where(path, node)}: {reason}" for reason in reasons if reason]
    assert not problems, "\n".join(problems)


def _foreign(module: str, path: Path) -> bool:
    """Whether ``module`` is of a top-level package other than the one of ``path``."""
    top = module.split(".")[0]
    return top in PACKAGES and top != _top(path)


def _assigned(targets: list[ast.expr]) -> Iterator[str]:
    for target in targets:
        for part in ast.walk(target):
            if isinstance(part, ast.Name):
                yield part.id


def _defined_in(body: list[ast.stmt]) -> Iterator[str]:
    """The names a module or class body binds (in its ``if`` and ``try`` blocks too)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name
        if isinstance(node, ast.ClassDef):
            yield from _defined_in(node.body)
        elif isinstance(node, ast.Assign):
            yield from _assigned(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            yield from _assigned([node.target])
        elif isinstance(node, ast.If | ast.Try):
            yield from _defined_in(node.body + node.orelse)


@cache
def _private_names(path: Path) -> frozenset[str]:
    """The private names a module defines: at its top, in its classes, as ``self._x``."""
    tree = _tree(path)
    names = set(_defined_in(tree.body))
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        names.update(
            target.attr
            for target in targets
            if isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id in ("self", "cls")
        )
    return frozenset(name for name in names if _is_private(name) and name != "_")


def _allowed(node: ast.Attribute, lines: list[str]) -> bool:
    """Whether ``x._name`` is exempt: one's own (``self``, ``cls``), a third party's public
    type or row method, or a line that says why (``# private: <reason>``)."""
    base = node.value
    if isinstance(base, ast.Name) and base.id in ("self", "cls", *PUBLIC_BASES):
        return True
    if isinstance(base, ast.Attribute) and base.attr in PUBLIC_BASES:
        return True
    if node.attr in PUBLIC_ATTRIBUTES:
        return True
    return any(OPT_OUT in lines[line - 1] for line in {node.lineno, node.end_lineno or 0} if line)


def test_no_access_to_another_modules_private_attributes() -> None:
    """No ``x._name`` reaches a private name another project module defines (from tests,
    bench and fuzz: any private name they do not define), unless its line says why."""
    defining = Counter(name for path in _product_files() for name in _private_names(path))
    problems = []
    for path in _all_files():
        tree = _tree(path)
        lines = _source(path).splitlines()
        aliases = _module_aliases(tree)
        own = _private_names(path)
        client = _top(path) in CLIENTS
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
                continue
            if _allowed(node, lines):
                continue
            theirs = node.attr not in own and (client or defining[node.attr] > 0)
            if theirs or _module_of(node.value, aliases) is not None:
                problems.append(f"{_where(path, node)}: .{node.attr}")
    assert not problems, "\n".join(problems)
