"""Debian's dcmtk as the DIMSE peer of the tests: its tools run with TCP_NODELAY=1, and a
bit-preserving storescp receives what C-MOVE sends."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.tools import dcmtk_tool

TOOLS = ("echoscu", "storescu", "dcmsend", "findscu", "movescu", "getscu", "storescp")
CALLING_AE = "TEST"
STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9A-Fa-f]{4})")



requires_dcmtk = pytest.mark.skipif(
    any(dcmtk_tool(tool) is None for tool in TOOLS),
    reason="dcmtk is not installed (apt-get install dcmtk)",
)


def tool_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def run(tool: str, *args: str, cwd: Path | None = None, timeout: float = 120) -> str:
    """Run a dcmtk tool in debug mode; its whole output (stdout and stderr)."""
    done = subprocess.run(
        [dcmtk_tool(tool) or tool, "-d", *args], cwd=cwd, env=tool_env(), capture_output=True,
        text=True, timeout=timeout, errors="replace",
    )
    return done.stdout + done.stderr


def peer(port: int, aet: str = CALLING_AE, called: str = "DICOMWEB") -> list[str]:
    return ["-aet", aet, "-aec", called, "127.0.0.1", str(port)]


def statuses(output: str) -> list[int]:
    """Every DIMSE Status a dcmtk tool printed, in order."""
    return [int(code, 16) for code in STATUS.findall(output)]


def keys(**values: str) -> list[str]:
    """findscu/movescu/getscu `-k` arguments."""
    args: list[str] = []
    for name, value in values.items():
        args += ["-k", f"{name}={value}" if value is not None else name]
    return args


def dataset_bytes(data: bytes | Path) -> bytes:
    """A Part 10 file's data set: what follows its File Meta Information."""
    if isinstance(data, Path):
        data = data.read_bytes()
    assert data[128:132] == b"DICM"
    (meta_length,) = struct.unpack("<I", data[140:144])
    return data[144 + meta_length :]


@dataclass
class StoreSCP:
    """`storescp +xa +B`: accepts every transfer syntax, writes what it receives exactly as
    received."""

    ae_title: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    def received(self, sop_instance_uid: str, timeout: float = 20) -> Path:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [p for p in self.folder.iterdir() if p.name.endswith("." + sop_instance_uid)]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"storescp did not receive {sop_instance_uid}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_storescp(ae_title: str, port: int, folder: Path) -> StoreSCP:
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder.parent / f"storescp-{port}.log").open("wb")
    process = subprocess.Popen(
        [dcmtk_tool("storescp") or "storescp", "+xa", "+B", "-aet", ae_title, "-od",
         str(folder), str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=tool_env(),
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        if "Association Accepted" in run("echoscu", *peer(port, called=ae_title), timeout=10):
            return StoreSCP(ae_title, port, folder, process)
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"storescp on {port} did not start")
