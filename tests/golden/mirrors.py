"""Reading the golden scripts' fetched original repositories: git snapshots, bare or not."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> bytes:
    """``git --git-dir=repo args``'s output; a failure stops the script with git's message."""
    done = subprocess.run(["git", f"--git-dir={repo}", *args], capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} in {repo} failed:\n{done.stderr.decode()}")
    return done.stdout


def git_dir(path: str) -> Path:
    """The git directory of a snapshot: ``path/.git`` of a checkout, ``path`` itself if bare."""
    repo = Path(path)
    return repo / ".git" if (repo / ".git").is_dir() else repo
