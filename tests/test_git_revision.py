"""meta.json's git_revision: "+dirty" when the code differs from the commit, not when a run's results do."""
import shutil
import subprocess
from pathlib import Path

import pytest

from rocbench.core.platform import git_revision

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A repository with code under pkg/ and a committed example under results/."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "kernel.py").write_text("x = 1\n")
    (tmp_path / "results" / "examples").mkdir(parents=True)
    (tmp_path / "results" / "examples" / "report.md").write_text("before\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tmp_path


def test_clean_checkout_is_the_commit(checkout: Path):
    assert git_revision(str(checkout / "pkg")) == _git(checkout, "rev-parse", "HEAD")


def test_results_moved_or_changed_do_not_make_it_dirty(checkout: Path):
    (checkout / "results" / "examples" / "report.md").write_text("after\n")
    shutil.move(checkout / "results", checkout / "results.repo")  # as device_moe.sh's bench part moves it aside
    assert not git_revision(str(checkout / "pkg")).endswith("+dirty")


def test_changed_code_is_dirty(checkout: Path):
    (checkout / "pkg" / "kernel.py").write_text("x = 2\n")
    assert git_revision(str(checkout / "pkg")) == _git(checkout, "rev-parse", "HEAD") + "+dirty"


def test_outside_a_checkout_there_is_none(tmp_path: Path):
    assert git_revision(str(tmp_path)) is None
