"""External programs the benchmarks and tests run."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def dcmtk_tool(tool: str) -> str | None:
    """The dcmtk program `tool` on PATH, skipping this Python's own bin folder: pynetdicom
    installs console scripts of the same names (storescu, findscu…) there, which an activated
    venv would otherwise put first."""
    own_bin = Path(sys.prefix, "bin").resolve()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or Path(folder).resolve() == own_bin:
            continue
        if found := shutil.which(tool, path=folder):
            return found
    return None
