"""What rocbench's Triton kernels compile to for a target, as a digest to diff: one line per compiled kernel (a hash of
its PTX or AMDGCN without debug information, which holds source paths and line numbers, and its name), then one line
per call compiled (tests/compile_only.py: every product config and `--tune` candidate) with its status. Equal digests
before and after a change mean that, for that target and Triton, the change compiled to the same code.

    python -m tests.kernel_digest sm90 > before.txt     # gfx942, gfx950, sm80, sm89, sm90; no TRITON_INTERPRET
    ... change ...
    python -m tests.kernel_digest sm90 > after.txt && diff before.txt after.txt
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_DEBUG_SECTION = re.compile(r"\s*\.section\s+\.debug")
_OTHER_SECTION = re.compile(r"\s*\.(section|text|amdgpu_metadata|end_amdgpu_metadata)\b")
# line directives, and PTX's debug-scope labels (one per inlined call: a helper function moves their numbers)
_DEBUG_LINE = re.compile(r"\s*(\.file|\.loc)\b|\$L__tmp\d+:\s*$")


def code_of(assembly: str, comment: str) -> str:
    """PTX or AMDGCN without debug sections, line directives, debug-scope labels and comments (`comment`: `//` in PTX,
    `;` in AMDGCN)."""
    kept, in_debug = [], False
    for line in assembly.splitlines():
        if _DEBUG_SECTION.match(line):
            in_debug = True
        elif _OTHER_SECTION.match(line):
            in_debug = False
        if in_debug or _DEBUG_LINE.match(line):
            continue
        code = line.split(comment, 1)[0].rstrip()
        if code:
            kept.append(code)
    return "\n".join(kept)


def digest_lines(cache_dir: Path) -> list[str]:
    """`<hash> <kernel name>` for every PTX / AMDGCN file Triton left in cache_dir, sorted."""
    files = [*cache_dir.rglob("*.ptx"), *cache_dir.rglob("*.amdgcn")]
    comments = {".ptx": "//", ".amdgcn": ";"}
    return sorted(f"{hashlib.sha1(code_of(f.read_text(), comments[f.suffix]).encode()).hexdigest()[:16]} {f.stem}"
                  for f in files)


def main(target: str) -> int:
    with tempfile.TemporaryDirectory(prefix="rocbench-digest-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": cache}
        run = subprocess.run([sys.executable, "-m", "tests.compile_only", target, "--tune"], env=env,
                             capture_output=True, text=True)
        if run.returncode:
            sys.stderr.write(run.stderr[-4000:])
            return run.returncode
        kernels = digest_lines(Path(cache))
    calls = [json.loads(line) for line in run.stdout.splitlines()]
    print("\n".join(kernels))
    for call in calls:
        status = call.pop("status")
        print("call", json.dumps(call, sort_keys=True), "->", status.split(":")[0])  # the error's type, not its text
    ok = sum(c["status"] == "ok" for c in map(json.loads, run.stdout.splitlines()))
    print(f"{target}: {len(kernels)} kernels compiled, {ok} of {len(calls)} calls ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "sm90"))
