"""Dependencies point one way: down the pipeline, never into a front door.

The library is grouped by the stage of the pipeline each module serves
(docs/architecture.md). A module may import from its own stage and from the
stages before it; never from a later stage, and never from the front doors
(web/, cli/, workers/), which call the stages and are called by nobody.
Imports inside functions and under TYPE_CHECKING count too: they are
dependencies all the same. And the library never imports Celery: workers/
is the only Celery code.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# In the order data flows; each stage may use those above it.
STAGES = (
    ("base", ("newsletter.config", "newsletter.errors", "newsletter.logs", "newsletter.addresses",
              "newsletter.wording")),
    ("authoring", ("newsletter.authoring",)),
    ("store", ("newsletter.store",)),
    ("transports", ("newsletter.transports",)),
    ("audience", ("newsletter.audience",)),
    ("sending", ("newsletter.sending",)),
    ("feedback", ("newsletter.feedback",)),
    ("ops", ("newsletter.ops",)),
    ("accounts", ("newsletter.accounts",)),  # who logs in: accounts, roles, sessions, invitations, the audit log
    ("console", ("newsletter.console",)),  # the comms console's library: drafts, approval, results
)
FRONT_DOORS = ("newsletter.web", "newsletter.cli", "newsletter.__main__", "workers")
PACKAGE = "newsletter"  # its __init__ holds the version only: read by anyone


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def stage_of(module: str) -> int | None:
    """The stage's index, -1 for a front door, None when no stage claims the module."""
    if module == PACKAGE:
        return 0
    if _within(module, FRONT_DOORS):
        return -1
    for index, (_name, prefixes) in enumerate(STAGES):
        if _within(module, prefixes):
            return index
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str, bool]]:
    """(line, module, at module level) for every import of ours in source."""
    tree = ast.parse(source)
    top_level = _import_time(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from package import module` names the module; `from module import name`, the module.
            names = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("newsletter", "workers", "celery"):
                found.append((node.lineno, name, id(node) in top_level))
    return found


def _import_time(tree: ast.Module) -> set[int]:
    """The ids of import statements run when the module is imported (not in a function, not for type checkers)."""
    found, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.add(id(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
        else:
            todo += ast.iter_child_nodes(node)
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(path: str, source: str) -> list[str]:
    """What is wrong with the imports of the module at path (relative to the checkout)."""
    full = ROOT / path
    module = module_name(full)
    own = stage_of(module)
    if own is None:
        return [f"{path}: no stage claims {module}; add its package to STAGES in {Path(__file__).name}"]
    imports = imported_modules(source, module, full.name == "__init__.py")
    problems = [f"{path}:{line} imports {target}: the library never imports Celery; workers/ does"
                for line, target, _ in imports if target.split(".")[0] == "celery" and module.startswith(PACKAGE)]
    if own == -1:
        return problems
    for line, target, _ in imports:
        theirs = stage_of(target)
        if theirs == -1:
            problems.append(f"{path}:{line} imports {target}, a front door; move what it needs into a stage")
        elif theirs is not None and theirs > own:
            problems.append(f"{path}:{line} imports {target} ({STAGES[theirs][0]}), a later stage than "
                            f"{STAGES[own][0]}; move the piece it needs to where it belongs")
    return problems


def library_files() -> list[Path]:
    return sorted(p for p in (ROOT / "newsletter").rglob("*.py") if "migrations" not in p.relative_to(ROOT).parts)


def test_every_import_points_down_the_pipeline():
    problems = []
    for path in library_files():
        problems += violations(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def import_cycle(sources: dict[str, str]) -> list[str]:
    """A circle of modules that import each other when imported (module -> source), or []."""
    graph = {}
    for module, source in sources.items():
        imports = imported_modules(source, module, is_package=False)
        graph[module] = {target for _, target, top in imports if top and target != module and target in sources}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_no_two_library_modules_need_each_other_at_import_time():
    # The front doors are left out: a Flask blueprint's package and its views may import each other.
    files = [p for p in library_files() if stage_of(module_name(p)) != -1]
    cycle = import_cycle({module_name(p): p.read_text(encoding="utf-8") for p in files})
    assert not cycle, f"modules import each other: {' -> '.join(cycle)}"


def test_the_check_finds_a_circle_but_not_a_lazy_or_type_only_import():
    circle = {"newsletter.sending.a": "from newsletter.sending.b import x\n",
              "newsletter.sending.b": "from newsletter.sending.a import y\n"}
    assert sorted(set(import_cycle(circle))) == ["newsletter.sending.a", "newsletter.sending.b"]
    lazy = {**circle, "newsletter.sending.b": "def f():\n    from newsletter.sending.a import y\n"}
    typed = {**circle, "newsletter.sending.b": "if TYPE_CHECKING:\n    from newsletter.sending.a import y\n"}
    assert import_cycle(lazy) == [] and import_cycle(typed) == []


@pytest.mark.parametrize("path, source, expected", [
    ("newsletter/store/models.py", "from newsletter.sending.lifecycle import progress\n", "a later stage than store"),
    ("newsletter/audience/signup.py", "def f():\n    from newsletter.feedback import events\n", "a later stage"),
    ("newsletter/ops/broker.py", "from workers.queues import ALL\n", "a front door"),
    ("newsletter/sending/delivery.py", "from newsletter.web import pages\n", "a front door"),
    ("newsletter/authoring/render.py", "from . import markup\nfrom ..audience import tokens\n", "a later stage"),
    ("newsletter/billing.py", "", "no stage claims newsletter.billing"),
    ("newsletter/cli/ops.py", "def f():\n    from celery import Celery\n", "never imports Celery"),
])
def test_the_check_finds_imports_that_point_the_wrong_way(path, source, expected):
    [problem] = violations(path, source)
    assert expected in problem and path in problem


@pytest.mark.parametrize("path, source", [
    ("newsletter/sending/delivery.py", "from newsletter.authoring.message import Recipient\nimport newsletter.store.models\n"),
    ("newsletter/feedback/events.py", "from newsletter.audience import erasure\n"),
    ("newsletter/web/public.py", "from newsletter.feedback import events\nfrom workers import tasks\n"),
    ("workers/celery.py", "from celery import Celery\nfrom newsletter.ops import queues\n"),
])
def test_the_check_lets_imports_down_the_pipeline_pass(path, source):
    assert violations(path, source) == []
