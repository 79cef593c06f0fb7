"""The package's layout: imports point one way down the loop, no module imports itself back
through others, each stage's docstring states its rule, and docs/layout.md shows the tree."""

import ast
import re
from pathlib import Path

import pytest

import interp

PACKAGE = Path(interp.__file__).resolve().parent
LAYOUT_DOC = PACKAGE.parent / "docs" / "layout.md"

# The stages in the order imports may point: a module may import its own stage and the stages
# before it. export and studies share a rank and may not import each other.
RANKS = {"common": 0, "model": 1, "measure": 2, "locate": 3, "mitigate": 4, "export": 5,
         "studies": 5, "applications": 6}
APPLICATIONS = {"cli", "command_inputs", "loop", "report", "sweep"}  # top-level modules and packages on top of the stages


def module_files(package: Path) -> dict[str, Path]:
    """{dotted module name: file}; a package's __init__.py is named after the package."""
    out = {}
    for f in sorted(package.rglob("*.py")):
        parts = f.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, file: Path, known: set[str]) -> set[str]:
    """The package's modules `name` imports anywhere in its file, function bodies included."""
    is_package = file.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    root = name.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == root}
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[: len(here) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        elif node.module and node.module.split(".")[0] == root:
            module = node.module
        else:
            continue
        for a in node.names:  # `from pkg import sub` imports the module pkg.sub
            found.add(f"{module}.{a.name}" if f"{module}.{a.name}" in known else module)
    return found & known


def stage(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) == 1 or parts[1] in APPLICATIONS:
        return "applications"  # the package root re-exports the whole surface
    return parts[1] if parts[1] in RANKS else None


def graph(package: Path) -> dict[str, set[str]]:
    files = module_files(package)
    return {n: imports(n, f, set(files)) for n, f in files.items()}


def wrong_direction(edges: dict[str, set[str]]) -> list[str]:
    problems = []
    for a, targets in sorted(edges.items()):
        sa = stage(a)
        if sa is None:
            problems.append(f"{a} belongs to no stage: move it into a stage's folder "
                            f"({', '.join(s for s in RANKS if s != 'applications')}) or make it "
                            "an application")
            continue
        for b in sorted(targets):
            sb = stage(b)
            if sb is None or sb == sa:
                continue
            if RANKS[sb] >= RANKS[sa]:
                problems.append(f"{a} imports {b}: {sa} may not import {sb} (imports point "
                                "common ← model ← measure ← locate ← mitigate ← export/studies "
                                "← applications)")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_imports_point_one_way_down_the_loop():
    problems = wrong_direction(graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    found = cycles(graph(PACKAGE))
    assert not found, "import cycles: " + "; ".join(" ↔ ".join(c) for c in found)


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "interp"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_checks_name_an_upward_import_and_a_cycle(tmp_path):
    root = _fake_package(tmp_path, {
        "__init__.py": "",
        "measure/__init__.py": "",
        "measure/bias.py": "def f():\n    from ..locate.trace import trace\n",  # lazy, upward
        "locate/__init__.py": "",
        "locate/trace.py": "from . import result\n",
        "locate/result.py": "from .plots import figure\n",
        "locate/plots.py": "from .result import GROUPS\n",
        "stray.py": "",
    })
    edges = graph(root)
    problems = wrong_direction(edges)
    assert any("interp.measure.bias imports interp.locate.trace: measure may not import locate"
               in p for p in problems)
    assert any(p.startswith("interp.stray belongs to no stage") for p in problems)
    assert cycles(edges) == [["interp.locate.plots", "interp.locate.result"]]


def private_imports(package: Path) -> list[str]:
    """`from X import _name` (one leading underscore; dunders are fine) where X is one of the
    package's modules, anywhere in a file, as 'file:line: name from X'. A name another module
    needs is public: it gets a public name, or moves into the one module that uses it."""
    root = package.name
    found = []
    for file in module_files(package).values():
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if not node.level and (node.module or "").split(".")[0] != root:
                continue
            source = "." * node.level + (node.module or "")
            found += [(str(file.relative_to(package.parent)), node.lineno, a.name, source)
                      for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return [f"{file}:{line}: {name} from {source}" for file, line, name, source in sorted(found)]


def test_no_private_name_is_imported_across_modules():
    found = private_imports(PACKAGE)
    assert not found, ("private names imported from another module (make each public, or move "
                       "it into the one module that uses it):\n" + "\n".join(found))


def test_the_private_import_check_names_file_line_and_name(tmp_path):
    root = _fake_package(tmp_path, {
        "__init__.py": "from .stats import __version__, mean\n",
        "stats.py": "__version__ = '1'\n\ndef _put(): pass\n\ndef mean(): pass\n",
        "bias.py": "import os\nfrom os.path import _get_sep\n\ndef f():\n"
                   "    from interp.stats import _put, mean\n",
        "trace.py": "from .stats import (mean,\n                    _put)\n",
    })
    assert private_imports(root) == ["interp/bias.py:5: _put from interp.stats",
                                     "interp/trace.py:1: _put from .stats"]


STAGE_PACKAGES = [s for s in RANKS if s != "applications"]


@pytest.mark.parametrize("name", STAGE_PACKAGES)
def test_each_stage_says_what_it_holds_and_may_import(name):
    doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())) or ""
    match = re.search(r"May import: ([^\n]*)", doc)
    assert match, f"interp/{name}/__init__.py: its docstring should end with 'May import: ...'"
    said = set(re.findall(r"interp\.(\w+)", match.group(1)))
    allowed = {s for s in STAGE_PACKAGES if RANKS[s] < RANKS[name]}
    assert said == allowed, f"interp/{name} says it may import {sorted(said)}; the rule is " \
                            f"{sorted(allowed)}"


def test_layout_doc_shows_the_tree():
    block = LAYOUT_DOC.read_text().split("```", 2)[1]
    shown = set(re.findall(r"^  (\w+)/", block, re.MULTILINE))  # the folders of interp/
    actual = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert shown == actual, f"docs/layout.md shows {sorted(shown)}, interp/ has {sorted(actual)}"
    for name in actual - {"data"}:
        assert (PACKAGE / name / "__init__.py").is_file(), f"interp/{name} is not a package"


def test_the_public_measuring_modules_keep_their_import_paths():
    from interp.capability import perplexity
    from interp.measure import capability, prompts, suites
    from interp.prompts import PromptSet
    from interp.suites import run_suite

    assert PromptSet is prompts.PromptSet and run_suite is suites.run_suite
    assert perplexity is capability.perplexity and interp.metrics.bootstrap_ci


def test_the_command_line_is_a_thin_shell():
    # The CLI parses, checks, calls the library and prints: its files stay small, and the
    # pipelines it runs are library functions a notebook can call.
    for f in sorted((PACKAGE / "cli").glob("*.py")):
        lines = len(f.read_text().splitlines())
        assert lines <= 400, f"{f.relative_to(PACKAGE.parent)} has {lines} lines: move what it " \
                             "computes into the library"
    assert callable(interp.demo) and callable(interp.story_dpo) and callable(interp.verify_edit)
