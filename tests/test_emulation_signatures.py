"""The emulated torch_npu keeps the real torch_npu 2.13.0's Python API: names and signatures.

Both packages are read with :mod:`ast` (neither is imported): the real one from the
unpacked torch-npu wheel (``<sys.prefix>/share/npu_platform/torch_npu``, or
``NPU_PLATFORM_TORCH_NPU_DATA``), the emulated one from
``npu_platform/emulation/site/torch_npu``. For every module of the emulated package that
the real package also has, every name the emulated module binds (a def, a class, an
assignment, or a re-export from another torch_npu module) must exist in the real module
when it is public, and, public or private, a function, method or constructor that both
define must have the same parameters: names, kinds, order and defaults.

Not checked here: torch_npu's ops (``npu_*`` at the top level, checked against the op
schema YAML) and the names listed in :data:`SKIP` with their reasons.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from npu_platform import torch_npu_data

EMULATED_ROOT = (
    Path(__file__).resolve().parent.parent / "npu_platform" / "emulation" / "site" / "torch_npu"
)


def _real_root() -> Path:
    override = os.environ.get("NPU_PLATFORM_TORCH_NPU_DATA")
    return Path(override) if override else Path(torch_npu_data.shared_data_dir())


#: (module, name) -> why the name is not compared. "Class.member" names a class member.
SKIP: dict[tuple[str, str], str] = {}

#: Class members the emulated classes define in Python that torch_npu's classes get from
#: their C++ base classes (so the real Python class body has no such member).
CPP_BASE_MEMBERS: dict[str, str] = {
    "Stream.npu_stream": "torch_npu._C._NPUStreamBase.npu_stream (the stream handle)",
    "Event.npu_event": "torch_npu._C._NPUEventBase.npu_event (the event handle)",
    "MemPool.allocator": "torch_npu._C._MemPool.allocator (the pool's allocator)",
}


# ----------------------------------------------------------------------------- the trees


@dataclass
class Binding:
    kind: str  # "def", "class", "assign", "import" (from another torch_npu module)
    node: ast.AST | None = None
    target: tuple[str, str] | None = None  # for "import": (module path, name there)


class Tree:
    """A torch_npu source tree read with ast; module paths like ``npu/utils.py``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._modules: dict[str, ast.Module | None] = {}
        self._bindings: dict[str, dict[str, Binding]] = {}

    def modules(self) -> list[str]:
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*.py")
            if "__pycache__" not in p.parts
        )

    def has(self, path: str) -> bool:
        return (self.root / path).is_file()

    def parse(self, path: str) -> ast.Module | None:
        if path not in self._modules:
            file = self.root / path
            self._modules[path] = ast.parse(file.read_text(), str(file)) if file.is_file() else None
        return self._modules[path]

    def module_path(self, current: str, module: str | None, level: int) -> str | None:
        """The file a ``from <module> import`` in ``current`` refers to, inside the tree."""
        if level:
            package = Path(current).parent
            for _ in range(level - 1):
                package = package.parent
            parts = [*package.parts, *(module.split(".") if module else [])]
        elif module and (module == "torch_npu" or module.startswith("torch_npu.")):
            parts = module.split(".")[1:]
        else:
            return None  # outside torch_npu
        base = "/".join(parts)
        for candidate in (f"{base}/__init__.py" if base else "__init__.py", f"{base}.py"):
            if self.has(candidate):
                return candidate
        return f"{base}.py" if base else "__init__.py"

    def submodules(self, path: str) -> set[str]:
        if not path.endswith("__init__.py"):
            return set()
        folder = (self.root / path).parent
        names = {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"}
        names |= {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        return names

    def bindings(self, path: str) -> dict[str, Binding]:
        if path in self._bindings:
            return self._bindings[path]
        self._bindings[path] = result = {}
        tree = self.parse(path)
        if tree is None:
            return result
        for stmt in _module_level(tree.body):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                result[stmt.name] = Binding("def", stmt)
            elif isinstance(stmt, ast.ClassDef):
                result[stmt.name] = Binding("class", stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for name in _assigned_names(targets):
                    result[name] = Binding("assign", stmt)
            elif isinstance(stmt, ast.ImportFrom):
                source = self.module_path(path, stmt.module, stmt.level)
                if source is None:
                    continue  # stdlib, torch ...: not torch_npu's API
                for alias in stmt.names:
                    if alias.name == "*":
                        for name in self.star_names(source):
                            result.setdefault(name, Binding("import", target=(source, name)))
                    else:
                        result[alias.asname or alias.name] = Binding(
                            "import", target=(source, alias.name)
                        )
        return result

    def star_names(self, path: str) -> list[str]:
        tree = self.parse(path)
        if tree is None:
            return []
        for stmt in _module_level(tree.body):
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets
            ):
                return list(ast.literal_eval(stmt.value))
        return [name for name in self.bindings(path) if not name.startswith("_")]

    def resolve(self, path: str, name: str, depth: int = 0) -> Binding | None:
        """The def/class/assignment a name of a module comes from (following re-exports)."""
        binding = self.bindings(path).get(name)
        if binding is None:
            if name in self.submodules(path):
                return Binding("module")
            return None
        if binding.kind != "import" or depth > 10:
            return binding
        source, original = binding.target
        if original in self.submodules(source) and original not in self.bindings(source):
            return Binding("module")
        return self.resolve(source, original, depth + 1)


def _assigned_names(targets: list[ast.expr]) -> list[str]:
    """Names bound by assignment targets (``x = ``, ``x, y = ``), not ``x.a = `` / ``x[k] = ``."""
    names = []
    for target in targets:
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            names += _assigned_names(list(target.elts))
        elif isinstance(target, ast.Starred):
            names += _assigned_names([target.value])
    return names


def _module_level(body: list[ast.stmt]):
    """Statements run at module level, including those inside if/try/with blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.With, ast.For, ast.While)):
            yield from _module_level(stmt.body)
            yield from _module_level(getattr(stmt, "orelse", []))
        elif isinstance(stmt, ast.Try):
            yield from _module_level(stmt.body)
            for handler in stmt.handlers:
                yield from _module_level(handler.body)
            yield from _module_level(stmt.orelse)
            yield from _module_level(stmt.finalbody)


# ------------------------------------------------------------------------ the comparison


def parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, str, str]]:
    """(kind, name, default) of each parameter, in order; defaults as normalised ast dumps."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(
        a.defaults
    )

    def dump(node: ast.expr | None) -> str:
        return "-" if node is None else ast.dump(node, include_attributes=False)

    result = []
    for i, arg in enumerate(positional):
        kind = "positional-only" if i < len(a.posonlyargs) else "positional-or-keyword"
        result.append((kind, arg.arg, dump(defaults[i])))
    if a.vararg:
        result.append(("var-positional", a.vararg.arg, "-"))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        result.append(("keyword-only", arg.arg, dump(default)))
    if a.kwarg:
        result.append(("var-keyword", a.kwarg.arg, "-"))
    return result


def compare_functions(where: str, emulated, real) -> list[str]:
    mine, theirs = parameters(emulated), parameters(real)
    if mine == theirs:
        return []
    return [
        f"{where}: parameters differ from torch_npu 2.13.0\n"
        f"    emulated: ({ast.unparse(emulated.args)})\n"
        f"    real:     ({ast.unparse(real.args)})"
    ]


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        stmt.name: stmt
        for stmt in cls.body
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def compare_classes(module: str, emulated: ast.ClassDef, real: ast.ClassDef) -> list[str]:
    problems = []
    theirs = _methods(real)
    for name, method in _methods(emulated).items():
        where = f"{module}: {emulated.name}.{name}"
        if (module, f"{emulated.name}.{name}") in SKIP:
            continue
        if name in theirs:
            problems += compare_functions(where, method, theirs[name])
        elif name.startswith("__") and name.endswith("__"):
            continue  # a protocol hook torch_npu's C++ base class provides
        elif name.startswith("_"):
            continue  # an emulation helper
        elif f"{emulated.name}.{name}" not in CPP_BASE_MEMBERS:
            problems.append(f"{where}: torch_npu 2.13.0's {real.name} has no member {name}")
    return problems


def check_module(emulated_tree: Tree, real_tree: Tree, path: str) -> list[str]:
    problems = []
    for name in sorted(emulated_tree.bindings(path)):
        if name.startswith("__") or (path, name) in SKIP:
            continue
        if path == "__init__.py" and name.startswith("npu_"):
            continue  # ops: checked against torch_npu's op schema
        real = real_tree.resolve(path, name)
        if real is None:
            if not name.startswith("_"):
                problems.append(f"{path}: torch_npu 2.13.0 has no {name} here")
            continue
        mine = emulated_tree.resolve(path, name)
        if mine is None or mine.kind in ("assign", "module") or real.kind in ("assign", "module"):
            continue
        if mine.kind != real.kind:
            problems.append(f"{path}: {name} is a {mine.kind} here but a {real.kind} in torch_npu")
        elif mine.kind == "def":
            problems += compare_functions(f"{path}: {name}", mine.node, real.node)
        else:
            problems += compare_classes(path, mine.node, real.node)
    return problems


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def trees() -> tuple[Tree, Tree]:
    real = _real_root()
    assert (real / "npu" / "__init__.py").is_file(), (
        f"torch_npu 2.13.0's Python sources are not at {real}: run scripts/setup.sh (it unpacks "
        "the torch-npu wheel there) or set NPU_PLATFORM_TORCH_NPU_DATA"
    )
    return Tree(EMULATED_ROOT), Tree(real)


def _compared_modules(emulated: Tree, real: Tree) -> list[str]:
    return [path for path in emulated.modules() if real.has(path)]


def test_the_core_modules_are_compared(trees):
    emulated, real = trees
    compared = _compared_modules(emulated, real)
    for path in (
        "__init__.py",
        "npu/__init__.py",
        "npu/utils.py",
        "npu/streams.py",
        "npu/memory.py",
        "npu/graphs.py",
        "npu/random.py",
    ):
        assert path in compared


def test_emulated_api_matches_torch_npu(trees):
    emulated, real = trees
    problems = []
    for path in _compared_modules(emulated, real):
        problems += check_module(emulated, real, path)
    assert not problems, "\n".join(problems)


def test_skip_entries_still_exist(trees):
    emulated, _ = trees
    for module, name in SKIP:
        head = name.split(".")[0]
        assert head in emulated.bindings(module), f"stale SKIP entry {module}: {name}"


# A checker that cannot fail checks nothing: feed it a wrong default, a renamed parameter, a
# missing name and a wrong constructor, and see it object.


def _tree(tmp_path: Path, files: dict[str, str]) -> Tree:
    for name, text in files.items():
        file = tmp_path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return Tree(tmp_path)


REAL_SNIPPET = """
from .utils import stream, set_device
__all__ = ["stream", "set_device", "Graph"]
class Graph:
    def __init__(self, pool=None, mode="global"):
        pass
    def replay(self):
        pass
"""
REAL_UTILS = "def stream(stream):\n    pass\n\ndef set_device(device):\n    pass\n"


@pytest.mark.parametrize(
    ("utils", "init", "expected"),
    [
        (REAL_UTILS, REAL_SNIPPET, None),
        (
            "def stream(stream=None):\n    pass\ndef set_device(device):\n    pass\n",
            REAL_SNIPPET,
            "stream: parameters differ",
        ),
        (
            "def stream(s):\n    pass\ndef set_device(device):\n    pass\n",
            REAL_SNIPPET,
            "stream: parameters differ",
        ),
        (
            "def stream(stream, /):\n    pass\ndef set_device(device):\n    pass\n",
            REAL_SNIPPET,
            "stream: parameters differ",
        ),
        (
            REAL_UTILS,
            REAL_SNIPPET.replace('mode="global"', 'mode="relaxed"'),
            "Graph.__init__: parameters differ",
        ),
        (REAL_UTILS, REAL_SNIPPET + "def extra():\n    pass\n", "has no extra here"),
        (
            REAL_UTILS,
            REAL_SNIPPET.replace("def replay(self)", "def replay_all(self)"),
            "has no member replay_all",
        ),
    ],
)
def test_checker_objects_to_differences(tmp_path, utils, init, expected):
    real = _tree(tmp_path / "real", {"npu/__init__.py": REAL_SNIPPET, "npu/utils.py": REAL_UTILS})
    emulated = _tree(tmp_path / "emu", {"npu/__init__.py": init, "npu/utils.py": utils})
    problems = check_module(emulated, real, "npu/__init__.py")
    problems += check_module(emulated, real, "npu/utils.py")
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems
