"""Shared test helpers: run the CLI in a subprocess and read what it wrote."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def rocbench(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "rocbench", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def latest_run(out_dir: Path, suite: str) -> Path:
    runs = sorted(glob.glob(str(out_dir / f"{suite}-*")))
    assert runs, f"no {suite} run under {out_dir}"
    return Path(runs[-1])


def results(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv", keep_default_na=False, na_values=[""])


def meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "meta.json").read_text())
