"""A copy of the checkout to run the CLIs in as a user does: from its own
folder, with the relative paths the README and the automl workflow use."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from tests.conftest import REPO_ROOT

# Never part of a checkout a user runs from; large or machine-specific.
_IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info",
                                  "demo_output", ".pytest_cache")


def checkout_copy(target: pathlib.Path) -> pathlib.Path:
    """The tracked files of this checkout (every file, when it is not a
    git clone) copied into ``target``; returns ``target``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT,
                            capture_output=True, check=False)
    if listed.returncode != 0:
        shutil.copytree(REPO_ROOT, target, ignore=_IGNORED)
        return target
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing into the
    checkout under test, so the copy's own modules are what runs."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run_shell(script: str, cwd: pathlib.Path, timeout: int,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``script`` through bash in ``cwd``, exactly as typed (globs, ``$VAR``)."""
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd,
                          env={**user_env(), **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False)
