"""RT Image (a portal image): its geometry at ``…/rt/image`` and its pixels rendered.

The image is a 64 × 48 portal image at SID 1500 mm of a 1000 mm SAD machine (magnification
1.5), a bright 16 × 8 field in a dark surround; it references the generator's plan, beam 2.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
import requests
from factory import with_meta
from PIL import Image
from pydicom.uid import UID

from conformance import generate as gen

SEED = 9494
RT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.481.1")


def portal_image(rt: gen.RtStudy):
    ds = gen._new_instance(RT_IMAGE, rt.instance_uid("rtimage"), rt.patient, rt.study)
    gen._set_series(ds, "RTIMAGE", rt.series_uid("rtimage"), 8, "Portal images", rt.study)
    ds.InstanceNumber, ds.ContentDate, ds.ContentTime = 1, "20240610", "090000"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "PORTAL"]
    ds.ConversionType = "DI"
    ds.RTImageLabel, ds.RTImagePlane = "MV2", "NORMAL"
    ds.RTImageSID, ds.RadiationMachineSAD = 1500, 1000
    ds.RadiationMachineName = "LINAC1"
    ds.RTImagePosition = [-63.0, 47.25]
    ds.ImagePlanePixelSpacing = [2.0, 2.0]
    ds.XRayImageReceptorTranslation = [0, 0, -500]
    ds.GantryAngle, ds.BeamLimitingDeviceAngle, ds.PatientSupportAngle = 72, 10, 0
    ds.PrimaryDosimeterUnit = "MU"
    ds.ReferencedRTPlanSequence = [gen._image_ref(gen.RT_PLAN_STORAGE, rt.instance_uid("rtplan"))]
    ds.ReferencedBeamNumber, ds.ReferencedFractionGroupNumber = 2, 1
    ds.ExposureSequence = [gen._item(MetersetExposure=2, BeamLimitingDeviceSequence=[
        gen._item(RTBeamLimitingDeviceType="ASYMX", NumberOfLeafJawPairs=1,
                  LeafJawPositions=[-50, 50])])]
    pixels = np.full((48, 64), 100, dtype=np.uint16)
    pixels[20:28, 24:40] = 3000
    gen._set_mono_pixels(ds, pixels)
    ds.WindowCenter, ds.WindowWidth = 1550, 2900
    return ds


@pytest.fixture(scope="module")
def image_url(server) -> str:
    rt = gen.RtStudy(seed=SEED, ct_slices=4, mr_slices=0)
    ds = portal_image(rt)
    response = server.stow(with_meta(ds))
    assert response.status_code == 200, response.text
    return (f"{server.url}/studies/{rt.study.uid}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}")


def test_geometry(image_url) -> None:
    body = requests.get(image_url + "/rt/image", timeout=30).json()
    assert body["rt_image_plane"] == "NORMAL" and body["rt_image_sid"] == 1500
    assert body["magnification"] == pytest.approx(1.5)
    assert body["pixel_spacing_at_isocenter"] == pytest.approx([2 / 1.5, 2 / 1.5])
    assert body["rt_image_position"] == [-63.0, 47.25]
    assert (body["gantry_angle"], body["beam_limiting_device_angle"]) == (72, 10)
    assert body["referenced_beam_number"] == 2 and body["referenced_plan_uid"]
    assert body["exposures"][0]["jaws"] == {"ASYMX": [-50, 50]}
    assert (body["rows"], body["columns"]) == (48, 64)


def test_rendered(image_url) -> None:
    response = requests.get(image_url + "/rendered", headers={"Accept": "image/png"},
                            timeout=30)
    assert response.status_code == 200
    picture = np.asarray(Image.open(BytesIO(response.content)).convert("L"))
    assert picture.shape == (48, 64)
    assert picture[24, 30] > 200 and picture[5, 5] < 20  # the field bright, the rest dark


def test_plan_resources_of_an_rt_image_do_not_exist(image_url) -> None:
    response = requests.get(image_url + "/rt/plan", timeout=30)
    assert response.status_code == 404 and "RT Image" in response.text
