"""The server driven by dicomweb-client, a real DICOMweb client, one call per transaction."""

from __future__ import annotations

import numpy as np
from dicomweb_client.api import DICOMwebClient
from factory import image, new_uid


def test_store_search_retrieve_with_dicomweb_client(server):
    client = DICOMwebClient(url=server.url)
    study, series = new_uid(), new_uid()
    datasets = [image(study=study, series=series, instance_number=i, frames=3) for i in (1, 2)]
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 2

    studies = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert studies[0]["0020000D"]["Value"] == [study]
    found = client.search_for_series(study, search_filters={"Modality": "CT"})
    assert found[0]["0020000E"]["Value"] == [series]
    instances = client.search_for_instances(study, series)
    assert len(instances) == 2

    metadata = client.retrieve_series_metadata(study, series)
    assert {m["00080018"]["Value"][0] for m in metadata} == {d.SOPInstanceUID for d in datasets}

    retrieved = client.retrieve_instance(
        study, series, datasets[0].SOPInstanceUID, media_types=(("application/dicom", "*"),)
    )
    assert retrieved.SOPInstanceUID == datasets[0].SOPInstanceUID
    assert retrieved.PixelData == datasets[0].PixelData
    assert retrieved.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"

    frames = client.retrieve_instance_frames(study, series, datasets[1].SOPInstanceUID, [1, 3])
    expected = np.frombuffer(datasets[1].PixelData, dtype="<u2").reshape(3, -1)
    assert frames[0] == expected[0].tobytes() and frames[1] == expected[2].tobytes()

    series_instances = client.retrieve_series(
        study, series, media_types=(("application/dicom", "*"),)
    )
    assert sorted(d.SOPInstanceUID for d in series_instances) == sorted(
        d.SOPInstanceUID for d in datasets
    )

    client.delete_study(study)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
