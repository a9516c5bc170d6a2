"""Spatial Fiducials (FIDUCIALS; PS3.3 A.40, C.21.2) and the fiducial residuals of a
registration.

Each Fiducial Set Sequence item holds fiducials in one Frame of Reference (Frame of Reference
UID) or on referenced images; each fiducial has an identifier, an optional Fiducial UID, a
Shape Type (POINT, LINE, PLANE, SURFACE, RULER, L_SHAPE, T_SHAPE, SHAPE) and its points:
Contour Data (x, y, z in mm, patient coordinates) or Graphic Coordinates Data (column, row on
an image).

A Spatial Registration item may list the fiducials it was made from (Used Fiducials Sequence,
C.20.2: the FIDUCIALS instance and the Fiducial UID). The residual of a fiducial is how far its
point, mapped by the item's matrix into the registration's Frame of Reference, lands from its
pair: the fiducial of the same identifier that lies in the registration's own Frame of
Reference (decided here: PS3.3 names no pairing; identifiers are what planning systems match).
A fiducial of several points stands for their centroid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d

FIDUCIALS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.2"


@dataclass(eq=False)
class Fiducial:
    identifier: str | None
    uid: str | None
    shape_type: str | None
    description: str | None
    frame_of_reference_uid: str | None
    points: np.ndarray | None  # (N, 3) mm, in frame_of_reference_uid
    image_points: list[dict] = field(default_factory=list)  # [{sop, frame, points [[c, r]]}]

    @property
    def centre(self) -> np.ndarray | None:
        return None if self.points is None or not len(self.points) else self.points.mean(axis=0)


@dataclass(eq=False)
class FiducialSets:
    sop_instance_uid: str | None
    fiducials: list[Fiducial] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_fiducials(ds: Dataset) -> FiducialSets:
    d.check_kind(ds, [FIDUCIALS_SOP_CLASS], ["FID"], "a Spatial Fiducials instance")
    w: list[str] = []
    out = FiducialSets(d.text(ds, "SOPInstanceUID"), warnings=w)
    for i, fset in enumerate(d.sequence(ds, "FiducialSetSequence", w)):
        for_uid = d.text(fset, "FrameOfReferenceUID")
        for j, item in enumerate(d.sequence(fset, "FiducialSequence", w,
                                            f"FiducialSetSequence[{i}]: ")):
            ctx = f"FiducialSetSequence[{i}].FiducialSequence[{j}]: "
            points = d.numbers(item, "ContourData")
            if points is not None and points.size % 3:
                w.append(f"{ctx}ContourData is not a list of (x, y, z)")
                points = None
            image_points = [{
                "referenced_sop_instance_uid": next(iter(d.uids(d.sequence(
                    g, "ReferencedImageSequence"))), None),
                "points": _pairs(d.numbers(g, "GraphicData"))}
                for g in d.sequence(item, "GraphicCoordinatesDataSequence")]
            if points is None and not image_points:
                w.append(f"{ctx}neither ContourData nor GraphicCoordinatesDataSequence")
            if points is not None and for_uid is None:
                w.append(f"{ctx}ContourData without a FrameOfReferenceUID in its set")
            out.fiducials.append(Fiducial(
                identifier=d.text(item, "FiducialIdentifier", w, ctx),
                uid=d.text(item, "FiducialUID"), shape_type=d.text(item, "ShapeType", w, ctx),
                description=d.text(item, "FiducialDescription"), frame_of_reference_uid=for_uid,
                points=None if points is None else points.reshape(-1, 3),
                image_points=image_points))
    return out


def _pairs(values: np.ndarray | None) -> list[list[float]]:
    return [] if values is None else values[: values.size // 2 * 2].reshape(-1, 2).tolist()


def used_fiducials(reg_ds: Dataset) -> list[tuple[str | None, list[tuple[str | None, str]]]]:
    """Per Registration Sequence item: its Frame of Reference and the (FIDUCIALS SOP Instance
    UID, Fiducial UID) pairs of its Used Fiducials Sequence."""
    out = []
    for item in reg_ds.get("RegistrationSequence") or []:
        used = [(d.text(u, "ReferencedSOPInstanceUID"), d.text(u, "FiducialUID") or "")
                for u in item.get("UsedFiducialsSequence") or []]
        out.append((d.text(item, "FrameOfReferenceUID"), [u for u in used if u[1]]))
    return out


def residuals(matrix: np.ndarray, moving: list[Fiducial], fixed: list[Fiducial]) -> dict:
    """Residuals of ``moving`` fiducials mapped by ``matrix`` against the ``fixed`` fiducials of
    the same identifier; RMS and maximum over the pairs found."""
    by_id = {f.identifier: f for f in fixed if f.centre is not None}
    rows, distances = [], []
    for f in moving:
        pair = by_id.get(f.identifier)
        if f.centre is None:
            continue
        mapped = matrix[:3, :3] @ f.centre + matrix[:3, 3]
        row = {"identifier": f.identifier, "fiducial_uid": f.uid,
               "point": f.centre.tolist(), "mapped": mapped.tolist(),
               "pair_fiducial_uid": pair.uid if pair else None,
               "pair_point": pair.centre.tolist() if pair else None,  # type: ignore[union-attr]
               "residual_mm": None}
        if pair is not None:
            distance = float(np.linalg.norm(mapped - pair.centre))
            row["residual_mm"] = distance
            distances.append(distance)
        rows.append(row)
    return {"fiducials": rows, "pairs": len(distances),
            "rms_mm": float(np.sqrt(np.mean(np.square(distances)))) if distances else None,
            "max_mm": max(distances) if distances else None}
