"""Layers point one way: core knows no family; formats and kernels know no suite; the public API is light."""
import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent / "rocbench"
# layer -> the rocbench layers its modules may import (itself included). core's root holds the contract and the
# types every layer shares; its wings sit above it: fault injection, reporting (reads results, runs nothing), the
# harness (which writes a run's report) and the command line on top.
CORE_WINGS = ("core.faults", "core.reporting", "core.harness", "core.cli")
ALLOWED = {
    "core": {"core"},
    "core.faults": {"core", "core.faults"},
    "core.reporting": {"core", "core.reporting"},
    "core.harness": {"core", "core.faults", "core.reporting", "core.harness"},
    "core.cli": {"core", "core.faults", "core.reporting", "core.harness", "core.cli"},
    "formats": {"core", "formats"},
    "kernels": {"core", "formats", "kernels"},
    "rocm": {"core", "formats", "rocm"},
    "suites": {"core", "core.harness", "formats", "kernels", "rocm", "suites"},
}


def layer(module: str) -> str:
    """rocbench.<layer>.<...> (core's wings are layers of their own); the package itself, cli, moe, plugin (the
    public API) and __main__ are the top."""
    parts = module.split(".")
    if len(parts) > 2 and ".".join(parts[1:3]) in CORE_WINGS:
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "top"


def modules() -> dict[str, Path]:
    return {".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): path
            for path in sorted(ROOT.rglob("*.py"))}


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rocbench."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("rocbench.")]
    return found


def test_no_import_points_upward():
    wrong = []
    for module, path in modules().items():
        own = layer(module)
        if own == "top":
            continue
        for line, target in imports(path):
            if layer(target) not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line}: {own} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rocbench.suites.mla import SUITE\n")
    assert imports(bad) == [(2, "rocbench.suites.mla")] and layer("rocbench.suites.mla") not in ALLOWED["core"]


def test_no_import_circles():
    """Counting imports inside functions too: a lazy import that closes a circle still ties two modules together."""
    known = modules()
    graph = {module: {target for _, target in imports(path) if target in known and target != module}
             for module, path in known.items()}
    # `from rocbench.core.harness import gate` names the package; the module it loads is what the graph needs
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in known:
                graph[module] |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    for module in graph:  # a package's own __init__ importing nothing does not tie its modules together
        graph[module] -= {m for m in graph[module] if module.startswith(m + ".")}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"import circle: {' -> '.join(err.args[1])}") from None


def test_the_circle_check_sees_a_circle():
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())


def test_the_public_api_does_not_drag_in_the_harness():
    modules = "rocbench.moe, rocbench.formats.paged_kv, rocbench.kernels.mla_decode, rocbench.kernels.moe_a16w4"
    probe = (f"import sys, {modules}; heavy = ('typer', 'rich', 'pandas', 'matplotlib', 'rocbench.core.harness', "
             "'rocbench.core.harness.ranks', 'rocbench.suites'); print([m for m in sys.modules if m.startswith(heavy)])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT.parent,
                         env={"PYTHONPATH": str(ROOT.parent), "TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_inputs_stay_bitwise_what_they_were():
    """Every rank's inputs and expected output of 524 cases across the three families, bitwise as main built them
    at a2c4e27 (tests/input_digests.py): old results stay comparable, and --resume of an old run runs the same data.
    Built in a fresh process, as every rocbench run builds them: inside `make test` this worker's own CPU float math
    once differed from a fresh process's on the same machine (environment probe 9ca81fad89c4b864 against
    b35a7861cf6ab07d, 3 of 6 fresh-clone runs, 2026-12-05 and -06), after some earlier test; a warning says when it does."""
    import json
    import warnings

    from tests.input_digests import environment_probe

    stored = json.loads((Path(__file__).parent / "data" / "input_digests.json").read_text())
    made_with = stored.pop("made_with")
    if torch.__version__ != made_with["torch"]:
        # expected outputs are float math on the CPU and fp8 conversions of specials moved between torch versions:
        # the digests say what rocbench's code builds on one torch (CI's pinned one), not what every torch builds
        pytest.skip(f"the digests were made with torch {made_with['torch']}; this is {torch.__version__}")
    fresh = subprocess.run([sys.executable, "-m", "tests.input_digests"], capture_output=True, text=True,
                           cwd=ROOT.parent, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    now = json.loads(fresh.stdout)
    probe = now.pop("made_with")["probe"]
    if probe != made_with["probe"]:
        pytest.skip(f"this machine's CPU random numbers or float math differ from those of the machine that made the "
                    f"digests (tests.input_digests.environment_probe {made_with['probe']}, here {probe}, CPU "
                    f"capability {torch.backends.cpu.get_cpu_capability()}): the same code draws other inputs here")
    here = environment_probe()
    if here != probe:
        warnings.warn(f"this pytest process's CPU float math differs from a fresh process's (environment probe "
                      f"{here}, fresh {probe}): a test that ran before in this worker changed it")
    for suite, digests in stored.items():
        moved = [case for case, value in digests.items() if now[suite].get(case) != value]
        assert not moved, f"{suite}: {len(moved)} of {len(digests)} cases build other inputs, e.g. {moved[0]}"
