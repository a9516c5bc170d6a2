"""End to end: C-ECHO and C-STORE with dcmtk against `dicomweb serve --dimse-port` (SQLite
and PostgreSQL): what is stored is what was received, found at once by QIDO and retrieved by
WADO; bad input gets its PS3.4 status and loses nothing."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path

import dcmtk
import factory
import pytest
import requests
from dcmtk import dataset_bytes, peer, requires_dcmtk, run, statuses
from pydicom import dcmread

pytestmark = requires_dcmtk
OUR_IMPLEMENTATION = "1.2.826.0.1.3680043.10.1452.1"


def write(folder: Path, datasets: list) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def retrieve(server, study: str, series: str, sop: str) -> bytes:
    response = requests.get(
        f"{server.url}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    (_, body), = factory.parse_multipart(response.headers["content-type"], response.content)
    return body


def a_series(count: int = 3, **fields) -> list:
    fields.setdefault("study", factory.new_uid())
    fields.setdefault("series", factory.new_uid())
    return [factory.image(instance_number=i, **fields) for i in range(1, count + 1)]


def test_echo(dimse_server) -> None:
    output = run("echoscu", *peer(dimse_server.port))
    assert "Received Echo Response (Success)" in output


def test_stored_instances_are_found_by_qido_and_retrieved_byte_for_byte(
    dimse_server, tmp_path
) -> None:
    datasets = a_series(3)
    paths = write(tmp_path, datasets)
    output = run("storescu", *peer(dimse_server.port), *map(str, paths))
    assert statuses(output) == [0, 0, 0], output
    # What a bit-preserving storescp receives from the same storescu is what we stored.
    run("storescu", *peer(dimse_server.destination.port, called="DEST"), *map(str, paths))
    study = datasets[0].StudyInstanceUID
    found = requests.get(f"{dimse_server.http.url}/studies?StudyInstanceUID={study}", timeout=30)
    assert found.status_code == 200
    assert found.json()[0]["00201208"]["Value"] == [3]
    for ds in datasets:
        stored = retrieve(dimse_server.http, study, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        received = dimse_server.destination.received(ds.SOPInstanceUID)
        assert dataset_bytes(stored) == dataset_bytes(received)
        meta = dcmread(BytesIO(stored), stop_before_pixels=True).file_meta
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert meta.ImplementationClassUID == OUR_IMPLEMENTATION


def test_pydicom_files_are_stored_as_received(dimse_server, tmp_path) -> None:
    """pydicom's test files (many transfer syntaxes and encodings), each with a fresh SOP
    Instance UID, sent by dcmsend (which proposes each file's own transfer syntax) to us and to
    storescp: whatever storescp received we stored byte for byte, or rejected as STOW rejects
    the same bytes."""
    files = []
    for number, source in enumerate(factory.PYDICOM_FILES):
        try:
            ds = dcmread(source, force=True)
            ds.SOPInstanceUID = factory.new_uid()
            if "SOPClassUID" not in ds or "StudyInstanceUID" not in ds:
                continue
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = tmp_path / f"{number}.dcm"
            ds.save_as(path, enforce_file_format=True)
        except Exception:
            continue  # not a dataset pydicom can write back
        files.append((str(ds.SOPInstanceUID), path))
    paths = [str(p) for _, p in files]
    run("dcmsend", "--no-halt", *peer(dimse_server.port), *paths, timeout=600)
    run("dcmsend", "--no-halt", *peer(dimse_server.destination.port, called="DEST"), *paths,
        timeout=600)
    stored = rejected = 0
    for uid, _ in files:
        received = [p for p in dimse_server.destination.folder.iterdir()
                    if p.name.endswith("." + uid)]
        if not received:
            continue  # storescu could not send it (e.g. no context for its transfer syntax)
        found = requests.get(f"{dimse_server.http.url}/instances?SOPInstanceUID={uid}",
                             timeout=30)
        if found.status_code == 204:
            stow = requests.post(f"{dimse_server.http.url}/studies",
                                 data=received[0].read_bytes(),
                                 headers={"Content-Type": "application/dicom"}, timeout=60)
            assert stow.status_code == 409, (uid, stow.text)
            rejected += 1
            continue
        row = found.json()[0]
        data = retrieve(dimse_server.http, row["0020000D"]["Value"][0],
                        row["0020000E"]["Value"][0], uid)
        assert dataset_bytes(data) == dataset_bytes(received[0]), uid
        stored += 1
    assert stored >= 0.8 * len(files), (stored, rejected, len(files))


def test_rt_objects_are_indexed(dimse_server, tmp_path) -> None:
    paths = factory.generated_study_files(tmp_path / "gen")
    rt_files = [p for p in paths if "/rt/" in str(p)]
    output = run("storescu", *peer(dimse_server.port), *map(str, rt_files), timeout=600)
    assert statuses(output) and set(statuses(output)) == {0}, output
    structure = next(dcmread(p) for p in rt_files if dcmread(p, stop_before_pixels=True)
                     .Modality == "RTSTRUCT")
    url = (f"{dimse_server.http.url}/studies/{structure.StudyInstanceUID}/series/"
           f"{structure.SeriesInstanceUID}/instances/{structure.SOPInstanceUID}/rt/rois")
    rois = requests.get(url, timeout=60)
    assert rois.status_code == 200, rois.text
    assert rois.json()


def test_duplicates_follow_the_stow_policy(dimse_server, tmp_path) -> None:
    (ds,) = a_series(1)
    (path,) = write(tmp_path / "first", [ds])
    assert statuses(run("storescu", *peer(dimse_server.port), str(path))) == [0]
    original = retrieve(dimse_server.http, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                        ds.SOPInstanceUID)
    assert statuses(run("storescu", *peer(dimse_server.port), str(path))) == [0]  # same bytes
    ds.PatientName = "Other^Name"
    (changed,) = write(tmp_path / "second", [ds])
    assert statuses(run("storescu", *peer(dimse_server.port), str(changed))) == [0x0111]
    assert retrieve(dimse_server.http, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                    ds.SOPInstanceUID) == original


UNKNOWN_CLASS = factory.PREFIX + "999.1"
UNKNOWN_PROFILE = f"""[[TransferSyntaxes]]
[Explicit]
TransferSyntax1 = LittleEndianExplicit
[[PresentationContexts]]
[Unknown]
PresentationContext1 = {UNKNOWN_CLASS}\\Explicit
[[Profiles]]
[UnknownProfile]
PresentationContexts = Unknown
"""


def test_unknown_sop_class_is_refused_with_0122(dimse_server, tmp_path) -> None:
    (ds,) = a_series(1, sop_class=UNKNOWN_CLASS)
    (path,) = write(tmp_path, [ds])
    config = tmp_path / "unknown.cfg"
    config.write_text(UNKNOWN_PROFILE)
    output = run("storescu", "-xf", str(config), "UnknownProfile", *peer(dimse_server.port),
                 str(path))
    assert statuses(output) == [0x0122], output
    found = requests.get(
        f"{dimse_server.http.url}/instances?SOPInstanceUID={ds.SOPInstanceUID}", timeout=30)
    assert found.status_code == 204


TRUNCATED_SENDER = """
import sys
from pynetdicom import AE, _config
_config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
ae = AE(ae_title="TEST")
ae.add_requested_context(sys.argv[3], "1.2.840.10008.1.2.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="DICOMWEB")
status = assoc.send_c_store(sys.argv[2])
print(f"STATUS {status.Status:04X}")
assoc.release()
"""


def test_truncated_dataset_gets_c000_and_loses_nothing(dimse_server, tmp_path) -> None:
    """dcmtk refuses to send a truncated file, so pynetdicom sends its raw bytes."""
    kept = a_series(2)
    paths = write(tmp_path / "kept", kept)
    assert statuses(run("storescu", *peer(dimse_server.port), *map(str, paths))) == [0, 0]
    (ds,) = a_series(1, study=kept[0].StudyInstanceUID, rows=64, columns=64)
    (path,) = write(tmp_path / "cut", [ds])
    path.write_bytes(path.read_bytes()[:-3000])
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATED_SENDER, str(dimse_server.port), str(path),
         ds.SOPClassUID], capture_output=True, text=True, timeout=60, env=dcmtk.tool_env(),
    )
    assert "STATUS C000" in done.stdout, done.stdout + done.stderr
    study = kept[0].StudyInstanceUID
    found = requests.get(f"{dimse_server.http.url}/studies/{study}/instances", timeout=30)
    assert sorted(r["00080018"]["Value"][0] for r in found.json()) == sorted(
        d.SOPInstanceUID for d in kept)


def test_peers_not_allowed(dimse_server, tmp_path) -> None:
    (ds,) = a_series(1)
    (path,) = write(tmp_path, [ds])
    stranger = run("storescu", *peer(dimse_server.port, aet="STRANGER"), str(path))
    assert "Association Rejected" in stranger and "Calling AE Title Not Recognized" in stranger
    reader = run("storescu", *peer(dimse_server.port, aet="READER"), str(path))
    assert statuses(reader) == [0x0124], reader
    found = requests.get(
        f"{dimse_server.http.url}/instances?SOPInstanceUID={ds.SOPInstanceUID}", timeout=30)
    assert found.status_code == 204


@pytest.mark.parametrize("aet", ["WRITER", "TEST"])
def test_writers_may_store(dimse_server, tmp_path, aet) -> None:
    (ds,) = a_series(1)
    (path,) = write(tmp_path, [ds])
    assert statuses(run("storescu", *peer(dimse_server.port, aet=aet), str(path))) == [0]


def test_command_and_dataset_uids_that_differ_get_a900(dimse_server, tmp_path) -> None:
    """PS3.7 9.1.1.1: pynetdicom takes the command's UIDs from the File Meta, so a file whose
    File Meta names another instance than its data set sends a mismatched C-STORE."""
    (ds,) = a_series(1)
    (path,) = write(tmp_path, [ds])
    other = factory.new_uid()
    mismatched = dcmread(path)
    mismatched.file_meta.MediaStorageSOPInstanceUID = other
    mismatched.save_as(path)  # as it is: enforcing the format would fix the File Meta
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATED_SENDER, str(dimse_server.port), str(path),
         ds.SOPClassUID], capture_output=True, text=True, timeout=60, env=dcmtk.tool_env(),
    )
    assert "STATUS A900" in done.stdout, done.stdout + done.stderr
    for uid in (ds.SOPInstanceUID, other):
        found = requests.get(f"{dimse_server.http.url}/instances?SOPInstanceUID={uid}",
                             timeout=30)
        assert found.status_code == 204


def test_stored_with_problems_gets_b000(dimse_server, tmp_path) -> None:
    """An RT structure set with a contour of an ROI it does not define is stored, and its
    parse problems come back as a Warning, as STOW's WarningReason."""
    from conformance import generate as gen

    ds = gen.rtstruct_dataset(gen.RtStudy(seed=4243, ct_slices=10, mr_slices=10))
    ds.SOPInstanceUID, ds.SeriesInstanceUID = factory.new_uid(), factory.new_uid()
    ds.ROIContourSequence[1].ReferencedROINumber = 77
    (path,) = write(tmp_path, [factory.with_meta(ds)])
    output = run("storescu", *peer(dimse_server.port), str(path))
    assert statuses(output) == [0xB000], output
    assert "ROI 77" in output
    found = requests.get(
        f"{dimse_server.http.url}/instances?SOPInstanceUID={ds.SOPInstanceUID}", timeout=30)
    assert found.status_code == 200



def test_concurrent_associations_store_every_instance_as_received(dimse_server, tmp_path) -> None:
    """Four associations at once share batches (an RT structure set among their files, its
    ROIs indexed): each instance is stored byte for byte, with a status of its own."""
    from conformance import generate as gen

    rt = gen.RtStudy(seed=7311, ct_slices=2, mr_slices=0)
    structure = gen.rtstruct_dataset(rt)
    study = factory.new_uid()
    groups = [a_series(10, study=study) for _ in range(4)]
    folders = [write(tmp_path / f"a{i}", group) for i, group in enumerate(groups)]
    folders[1].insert(5, gen.write(structure, tmp_path / "rt" / "structure.dcm"))
    senders = [subprocess.Popen(
        [dcmtk.dcmtk_tool("storescu") or "storescu", "-d", *peer(dimse_server.port),
         *map(str, paths)], env=dcmtk.tool_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace") for paths in folders]
    outputs = [sender.communicate(timeout=300)[0] for sender in senders]
    for output, paths in zip(outputs, folders, strict=True):
        assert statuses(output) == [0] * len(paths), output
    for group, paths in zip(groups, folders, strict=True):
        for ds, path in zip(group, [p for p in paths if "/rt/" not in str(p)], strict=True):
            stored = retrieve(dimse_server.http, study, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            assert dataset_bytes(stored) == dataset_bytes(path)
    found = requests.get(f"{dimse_server.http.url}/studies/{study}/instances", timeout=30)
    assert len(found.json()) == 40
    url = (f"{dimse_server.http.url}/studies/{structure.StudyInstanceUID}/series/"
           f"{structure.SeriesInstanceUID}/instances/{structure.SOPInstanceUID}/rt/rois")
    rois = requests.get(url, timeout=60)
    assert rois.status_code == 200, rois.text
    assert rois.json()
