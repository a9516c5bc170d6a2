"""Known-corrupt files: a 406/422 is logged as one line with the reason, never a traceback
(pydicom's per-plugin decoder tracebacks are dropped; the error that names them all is kept)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import requests
from factory import PYDICOM_FILES
from pydicom.uid import generate_uid

# pydicom's own corrupt examples: a 12-bit JPEG scan no plugin accepts, and a JPEG 2000
# codestream with a sequence delimiter inside.
CORRUPT = ("JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm")
RAW = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'


def with_own_uid(path: Path) -> bytes:
    """The file under a SOP Instance UID of its own: other tests on the shared server store
    pydicom files that carry the same UID with other content (a 409, in whatever order)."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_corrupt_pixel_data_logs_one_line(server) -> None:
    paths = [p for p in PYDICOM_FILES if p.name in CORRUPT]
    assert len(paths) == len(CORRUPT)
    log_before = len(server.log())
    for path in paths:
        response = requests.post(f"{server.url}/studies", data=with_own_uid(path),
                                 headers={"Content-Type": "application/dicom"}, timeout=60)
        assert response.status_code in (200, 202), response.text
        url = response.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        assert requests.get(url + "/rendered", headers={"Accept": "image/jpeg"},
                            timeout=60).status_code == 422
        assert requests.get(url + "/frames/1", headers={"Accept": RAW},
                            timeout=60).status_code == 406
    log = server.log()[log_before:]
    assert "Traceback" not in log
    failures = [line for line in log.splitlines() if " -> 422: " in line or " -> 406: " in line]
    assert len(failures) == 2 * len(paths)
    # Each line says why in words (the decoder's complaint, or the codestream header check's).
    assert all(len(line.split(": ", 2)[-1]) > 20 for line in failures)
