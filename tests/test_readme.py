"""The README's commands as written: CI runs its test command verbatim, and its examples run
as pasted against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import requests
from conftest import start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_ORIGIN = "http://127.0.0.1:8042"


def section(heading: str) -> str:
    """The text under the first heading that starts with `heading`, to the next heading of the
    same or a higher level (lines inside code blocks are no headings)."""
    lines = README.splitlines(keepends=True)
    in_code, start, level = False, None, 0
    for number, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        heading_match = None if in_code else re.match(r"(#+) (.*)", line)
        if not heading_match:
            continue
        if start is None and heading_match.group(2).startswith(heading):
            start, level = number + 1, len(heading_match.group(1))
        elif start is not None and len(heading_match.group(1)) <= level:
            return "".join(lines[start:number])
    assert start is not None, f"README.md has no heading '{heading}…'"
    return "".join(lines[start:])


def code_blocks(text: str) -> list[tuple[str, str]]:
    return [(language, body.strip()) for language, body in CODE_BLOCK.findall(text)]


def setup_commands() -> list[str]:
    return [body for _, body in code_blocks(section("Set up"))]


def test_the_setup_section_has_two_commands() -> None:
    install, tests = setup_commands()
    assert "\n" not in install and "\n" not in tests
    assert "dicomweb serve" in install
    assert tests.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test_command = setup_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [line for line in ci_lines if line and not line.startswith("#")]
    assert any(line.startswith(test_command) for line in commands), (
        f".ci/run does not run the README's test command `{test_command}` as written"
    )


def examples() -> tuple[str, str]:
    (shell_language, shell), (python_language, python) = code_blocks(section("Examples"))
    assert (shell_language, python_language) == ("sh", "python")
    return shell, python


def run_as_pasted(command: list[str], script: str, server, folder: Path):
    """Run an example with the README's address replaced by the test server's; curl fails on
    any HTTP error status, so a broken example fails the test."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        command,
        input=script.replace(README_ORIGIN, server.origin),
        text=True,
        capture_output=True,
        cwd=folder,
        env=env,
        timeout=120,
    )


def test_the_examples_run_as_pasted(backend, tmp_path: Path) -> None:
    """On a server of their own, as a new user's would be."""
    server = start_server(tmp_path / "data", backend)
    try:
        run_examples(server, tmp_path / "cwd")
    finally:
        stop_server(server)


def run_examples(server, tmp_path: Path) -> None:
    tmp_path.mkdir()
    shell, python = examples()
    failing_curl = 'curl() { command curl --fail --silent --show-error "$@"; }\n'
    result = run_as_pasted(["bash", "-euo", "pipefail"], failing_curl + shell, server, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "CompressedSamples" in result.stdout  # the search found the stored study
    assert "application" in result.stdout  # the WADL of Retrieve Capabilities
    assert (tmp_path / "frame1.bin").stat().st_size > 128 * 128 * 2
    study = re.search(r"^STUDY=(\S+)$", shell, re.MULTILINE).group(1)
    assert requests.get(f"{server.url}/studies?StudyInstanceUID={study}",
                        timeout=30).status_code == 204  # deleted by the last example

    result = run_as_pasted([sys.executable, "-"], python, server, tmp_path)
    assert result.returncode == 0, result.stderr
    # At least this study (the PostgreSQL database is shared by the session's tests).
    assert re.match(r"[1-9]\d* study; 1 instance; 32768 bytes in frame 1$", result.stdout)
    requests.delete(f"{server.url}/studies/{study}", timeout=30)


#: Settings that bound what one request may cost, beyond those whose name says "max".
BOUNDING_SETTINGS = {"pixel_memory_bytes", "pixel_wait_seconds", "volume_cache_bytes",
                     "shutdown_grace_seconds"}


def test_every_limit_is_in_the_limits_table() -> None:
    """Each bounding setting's variable, and each fixed bound's value, is a row of the table
    with what a client gets beyond it."""
    from dicomweb import multipart, part10, structure
    from dicomweb.config import Settings, env_name
    from dicomweb.pixels import mpr, palette, params

    rows = [line for line in section("Limits").splitlines() if line.startswith("| ")]
    assert len(rows) > 20
    names = [f.name for f in Settings.__dataclass_fields__.values()
             if "max" in f.name or f.name in BOUNDING_SETTINGS]
    for name in names:
        variable = env_name(name)
        assert any(f"`{variable}`" in row and row.rstrip(" |").split("|")[-1].strip()
                   for row in rows), f"{variable} is not in the Limits table"
    fixed = [multipart.MAX_HEADER_BYTES // 1024, multipart.MAX_PREAMBLE_BYTES // 1024,
             part10.MAX_TOP_LEVEL_ELEMENTS, part10.MAX_TAG_DESCENTS, part10.MAX_ITEMS,
             structure.MAX_SEQUENCE_DEPTH,
             params.MAX_VIEWPORT, mpr.MAX_OUTPUT_SIZE, params.MAX_ISODOSE_LEVELS,
             palette.MAX_SEGMENT_DEPTH]
    fixed_rows = " ".join(row for row in rows if "(fixed)" in row)
    for value in fixed:
        assert re.search(rf"\b{value}\b", fixed_rows), f"fixed limit {value} not in the table"
