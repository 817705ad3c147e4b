"""Layers point one way: core knows no family; formats and kernels know no suite; the public API is light."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "rocbench"
# layer -> the rocbench layers its modules may import (itself included)
ALLOWED = {
    "core": {"core"},
    "formats": {"core", "formats"},
    "kernels": {"core", "formats", "kernels"},
    "rocm": {"core", "formats", "rocm"},
    "suites": {"core", "formats", "kernels", "rocm", "suites"},
}


def layer(module: str) -> str:
    """rocbench.<layer>.<...>; the package itself, cli, moe (the public API) and __main__ are the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "top"


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
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
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


def test_the_public_api_does_not_drag_in_the_harness():
    modules = "rocbench.moe, rocbench.formats.paged_kv, rocbench.kernels.mla_decode, rocbench.kernels.moe_a16w4"
    probe = (f"import sys, {modules}; heavy = ('typer', 'rich', 'pandas', 'matplotlib', 'rocbench.core.harness', "
             "'rocbench.core.ranks', 'rocbench.suites'); print([m for m in sys.modules if m.startswith(heavy)])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT.parent,
                         env={"PYTHONPATH": str(ROOT.parent), "TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_inputs_stay_bitwise_what_they_were():
    """Every rank's inputs and expected output of 524 cases across the three families, bitwise as main built them
    at a2c4e27 (tests/input_digests.py): old results stay comparable, and --resume of an old run runs the same data."""
    import json

    from tests.input_digests import input_digests

    stored = json.loads((Path(__file__).parent / "data" / "input_digests.json").read_text())
    now = input_digests()
    for suite, digests in stored.items():
        moved = [case for case, value in digests.items() if now[suite].get(case) != value]
        assert not moved, f"{suite}: {len(moved)} of {len(digests)} cases build other inputs, e.g. {moved[0]}"
