"""Study and series download as ZIP (dicomweb/archive.py): streamed, the stored files byte for
byte, names readable, unique and safe."""

from __future__ import annotations

import io
import zipfile

import requests
from factory import image, new_uid, to_bytes

from dicomweb.archive import clean, entry_names
from dicomweb.store.repository import ArchiveRow


def row(number: int | None, sop: str, **values: str) -> ArchiveRow:
    base = dict(blob_key="k", sop_instance_uid=sop, instance_number=number,
                series_instance_uid="1.2", modality="CT", series_number=2,
                series_description="Axial", study_instance_uid="1.1", patient_id="P1",
                patient_name="Doe^Jane", study_date="20240101", study_description="Chest")
    base.update(values)
    return ArchiveRow(**base)  # type: ignore[arg-type]


def test_names_are_readable_unique_and_safe():
    names = entry_names([row(1, "1.3.1"), row(1, "1.3.2"), row(None, "1.3.3"),
                         row(2, "1.3.4", patient_id="../../etc", series_description="a/b\\c")])
    assert names[0] == "P1 Doe Jane/20240101 Chest/CT 2 Axial/CT000001.dcm"
    assert names[1] == "P1 Doe Jane/20240101 Chest/CT 2 Axial/CT000001-1.3.2.dcm"
    assert names[2].endswith("/1.3.3.dcm")
    assert len(set(names)) == 4
    assert all(".." not in part for name in names for part in name.split("/"))
    assert names[3].count("/") == 3
    assert clean("", "fallback") == "fallback"


def test_study_and_series_zip_hold_the_stored_files(server, stored_study):
    expected = {ds.SOPInstanceUID: to_bytes(ds) for ds in stored_study["datasets"]}
    study_url = f"{server.url}/studies/{stored_study['study']}"
    for url, count in [(study_url, 5), (f"{study_url}/series/{stored_study['mr']}", 2),
                       (f"{study_url}?accept=application/zip", 5)]:
        response = requests.get(url, headers={"Accept": "application/zip"}, timeout=60)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"].startswith("attachment; filename=")
        assert "content-length" not in response.headers  # streamed
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        assert archive.testzip() is None
        names = archive.namelist()
        assert len(names) == len(set(names)) == count
        for name in names:
            data = archive.read(name)
            sop = next(uid for uid, content in expected.items() if content == data)
            assert expected[sop] == data
            assert name.endswith(".dcm") and name.count("/") == 3


def test_zip_of_missing_study_is_404(server):
    response = requests.get(f"{server.url}/studies/{new_uid()}",
                            headers={"Accept": "application/zip"}, timeout=30)
    assert response.status_code == 404


def test_zip_keeps_instances_with_the_same_number(server):
    study, series = new_uid(), new_uid()
    datasets = [image(study=study, series=series, instance_number=1) for _ in range(3)]
    assert server.stow(*datasets).status_code == 200
    response = requests.get(f"{server.url}/studies/{study}",
                            headers={"Accept": "application/zip"}, timeout=30)
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert len(set(names)) == 3
