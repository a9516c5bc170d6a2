"""RT Image geometry (portal and simulator images; PS3.3 A.17, C.8.8.2).

The image lies in the plane normal to the beam axis at RT Image SID (source to image plane,
mm); RT Image Position is the (x, y) of the upper left pixel's centre in that plane's
coordinates (mm, origin where the beam axis crosses it), Image Plane Pixel Spacing the pixel
size there. Objects at the isocentre are magnified by SID / SAD, so a pixel spans
spacing · SAD / SID at the isocentre. Angles are the IEC 61217 gantry, beam limiting device
(collimator) and patient support angles the image was taken at.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from . import _dicom as d

RTIMAGE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.1"


def _list(ds: Dataset, keyword: str) -> list[float] | None:
    values = d.numbers(ds, keyword)
    return None if values is None else [float(v) for v in values.ravel()]


def rt_image_geometry(ds: Dataset) -> dict[str, Any]:
    d.check_kind(ds, [RTIMAGE_SOP_CLASS], ["RTIMAGE"], "an RT Image")
    w: list[str] = []
    sid = d.number(ds, "RTImageSID", w)
    sad = d.number(ds, "RadiationMachineSAD")
    spacing = _list(ds, "ImagePlanePixelSpacing")
    plans = d.sequence(ds, "ReferencedRTPlanSequence")
    magnification = sid / sad if sid and sad else None
    exposures = [{
        "meterset": d.number(e, "MetersetExposure"), "kvp": d.number(e, "KVP"),
        "exposure_time_ms": d.number(e, "ExposureTime"),
        "jaws": {d.text(b, "RTBeamLimitingDeviceType") or "?": _list(b, "LeafJawPositions")
                 for b in d.sequence(e, "BeamLimitingDeviceSequence")}}
        for e in d.sequence(ds, "ExposureSequence")]
    return {
        "sop_instance_uid": d.text(ds, "SOPInstanceUID"),
        "label": d.text(ds, "RTImageLabel"), "name": d.text(ds, "RTImageName"),
        "description": d.text(ds, "RTImageDescription"),
        "image_type": list(ds.get("ImageType") or []),
        "conversion_type": d.text(ds, "ConversionType"),
        "rt_image_plane": d.text(ds, "RTImagePlane", w),
        "rt_image_sid": sid, "radiation_machine_sad": sad,
        "radiation_machine_name": d.text(ds, "RadiationMachineName"),
        "rt_image_position": _list(ds, "RTImagePosition"),
        "rt_image_orientation": _list(ds, "RTImageOrientation"),
        "image_plane_pixel_spacing": spacing,
        "x_ray_image_receptor_translation": _list(ds, "XRayImageReceptorTranslation"),
        "x_ray_image_receptor_angle": d.number(ds, "XRayImageReceptorAngle"),
        "gantry_angle": d.number(ds, "GantryAngle"),
        "beam_limiting_device_angle": d.number(ds, "BeamLimitingDeviceAngle"),
        "patient_support_angle": d.number(ds, "PatientSupportAngle"),
        "isocenter_position": _list(ds, "IsocenterPosition"),
        "magnification": magnification,
        "pixel_spacing_at_isocenter": [v / magnification for v in spacing]
        if spacing and magnification else None,
        "rows": d.integer(ds, "Rows"), "columns": d.integer(ds, "Columns"),
        "referenced_plan_uid": d.text(plans[0], "ReferencedSOPInstanceUID") if plans else None,
        "referenced_fraction_group_number": d.integer(ds, "ReferencedFractionGroupNumber"),
        "referenced_beam_number": d.integer(ds, "ReferencedBeamNumber"),
        "primary_dosimeter_unit": d.text(ds, "PrimaryDosimeterUnit"),
        "exposures": exposures,
        "warnings": w,
    }
