"""The DICOM JSON encoder's fast path gives exactly what pydicom's conversion gives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from factory import PYDICOM_FILES, generated_study_files
from pydicom import dcmread

from dicomweb.dicomjson import DicomJsonEncoder


def encode(path: Path, *, fast: bool) -> bytes:
    return orjson.dumps(DicomJsonEncoder("/x", fast=fast).encode(dcmread(path, force=True)))


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: p.name)
def test_fast_path_matches_pydicom_on_pydicom_test_files(path: Path) -> None:
    try:
        slow = encode(path, fast=False)
    except Exception as exc:  # files pydicom itself cannot convert are not our subject
        pytest.skip(f"pydicom cannot convert {path.name}: {exc}")
    assert encode(path, fast=True) == slow


def test_fast_path_matches_pydicom_on_generated_studies(tmp_path: Path) -> None:
    files = generated_study_files(tmp_path)
    assert len(files) > 20
    for path in files:
        assert encode(path, fast=True) == encode(path, fast=False), path.name
