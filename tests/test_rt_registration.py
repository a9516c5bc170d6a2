"""Spatial registration parsing, composition and inversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomweb.rt import NoRegistrationPath, NotAnRtObject
from dicomweb.rt.registration import MatrixType, apply, parse_registration, transform
from dicomweb.rt.serialize import registration_to_json

CT, MR, PET, CBCT = "1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"


def rigid(angle_deg: float, axis: str, t) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    r = {"z": [[c, -s, 0], [s, c, 0], [0, 0, 1]], "x": [[1, 0, 0], [0, c, -s], [0, s, c]]}[axis]
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = t
    return m


def matrix_item(m: np.ndarray, kind: str = "RIGID") -> Dataset:
    item = Dataset()
    item.FrameOfReferenceTransformationMatrix = [f"{v:.10f}" for v in m.ravel()]
    item.FrameOfReferenceTransformationMatrixType = kind
    return item


def reg_item(for_uid: str, matrices: list[np.ndarray]) -> Dataset:
    mr = Dataset()
    mr.MatrixSequence = Sequence([matrix_item(m) for m in matrices])
    mr.RegistrationTypeCodeSequence = Sequence([])
    item = Dataset()
    item.FrameOfReferenceUID = for_uid
    img = Dataset()
    img.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    img.ReferencedSOPInstanceUID = for_uid + ".100"
    item.ReferencedImageSequence = Sequence([img])
    item.MatrixRegistrationSequence = Sequence([mr])
    return item


def registration_dataset(registered_for: str, items: list[Dataset]) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.1"
    ds.SOPInstanceUID = "1.2.3.99." + registered_for[-1]
    ds.Modality = "REG"
    ds.FrameOfReferenceUID = registered_for
    ds.RegistrationSequence = Sequence(items)
    return ds


MR_TO_CT = rigid(10.0, "z", [5.0, -12.0, 30.0])


def test_mr_point_maps_to_ct_point() -> None:
    ds = registration_dataset(CT, [reg_item(CT, [np.eye(4)]), reg_item(MR, [MR_TO_CT])])
    reg = parse_registration(ds)
    assert reg.registered_for_uid == CT and reg.warnings == []
    assert reg.items[1].source_for_uid == MR and reg.items[1].matrix_types == (MatrixType.RIGID,)
    assert reg.items[1].referenced_image_uids == (MR + ".100",)
    mr_point = np.array([10.0, 20.0, -5.0])
    ct_point = MR_TO_CT[:3, :3] @ mr_point + MR_TO_CT[:3, 3]
    np.testing.assert_allclose(apply(transform(reg, MR, CT), mr_point), ct_point, atol=1e-6)
    back = transform(reg, CT, MR)
    np.testing.assert_allclose(back, np.linalg.inv(transform(reg, MR, CT)), atol=1e-9)
    np.testing.assert_allclose(apply(back, ct_point), mr_point, atol=1e-6)
    np.testing.assert_allclose(transform(reg, MR, MR), np.eye(4))
    js = registration_to_json(reg)
    assert js["items"][1]["source_frame_of_reference_uid"] == MR
    assert js["items"][1]["target_frame_of_reference_uid"] == CT


def test_matrix_sequence_order_m2_after_m1() -> None:
    m1 = rigid(90.0, "z", [0, 0, 0])
    m2 = rigid(0.0, "z", [100.0, 0, 0])
    reg = parse_registration(registration_dataset(CT, [reg_item(MR, [m1, m2])]))
    # C.20.2.1.1: M = M2 · M1 -> rotate first, then translate.
    np.testing.assert_allclose(apply(transform(reg, MR, CT), [1.0, 0, 0]), [100, 1, 0],
                               atol=1e-9)


def test_composition_through_hub_and_across_registrations() -> None:
    pet_to_ct = rigid(-25.0, "x", [0.0, 3.0, -7.0])
    reg1 = parse_registration(registration_dataset(CT, [reg_item(MR, [MR_TO_CT]),
                                                        reg_item(PET, [pet_to_ct])]))
    mr_to_pet = transform(reg1, MR, PET)
    np.testing.assert_allclose(mr_to_pet, np.linalg.inv(pet_to_ct) @ MR_TO_CT, atol=1e-9)
    cbct_to_mr = rigid(3.0, "z", [1.0, 1.0, 1.0])
    reg2 = parse_registration(registration_dataset(MR, [reg_item(CBCT, [cbct_to_mr])]))
    chain = transform([reg1, reg2], CBCT, PET)
    np.testing.assert_allclose(chain, np.linalg.inv(pet_to_ct) @ MR_TO_CT @ cbct_to_mr,
                               atol=1e-9)
    with pytest.raises(NoRegistrationPath):
        transform(reg1, CBCT, CT)


def test_deformable_registration_parsed() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.3"
    ds.SOPInstanceUID = "1.2.3.98"
    ds.FrameOfReferenceUID = CT
    pre = Dataset()
    pre.FrameOfReferenceTransformationMatrix = [f"{v:.8f}" for v in MR_TO_CT.ravel()]
    pre.FrameOfReferenceTransformationMatrixType = "RIGID"
    grid = Dataset()
    grid.GridDimensions = [4, 4, 4]
    item = Dataset()
    item.SourceFrameOfReferenceUID = MR
    item.PreDeformationMatrixRegistrationSequence = Sequence([pre])
    item.DeformableRegistrationGridSequence = Sequence([grid])
    rigid_only = Dataset()
    rigid_only.SourceFrameOfReferenceUID = PET
    rigid_only.PostDeformationMatrixRegistrationSequence = Sequence([pre])
    ds.DeformableRegistrationSequence = Sequence([item, rigid_only])
    reg = parse_registration(ds)
    assert reg.deformable and reg.deformable_items[0].has_grid
    assert reg.deformable_items[0].grid_dimensions == (4, 4, 4)
    np.testing.assert_allclose(reg.deformable_items[0].pre_matrix, MR_TO_CT, atol=1e-7)
    with pytest.raises(NoRegistrationPath):  # the grid applies point by point (rt.deformable)
        transform(reg, MR, CT)
    # PS3.3 C.20.3.1.1: Post · Pre maps the registered FoR (CT) into the source FoR (PET).
    np.testing.assert_allclose(transform(reg, CT, PET), MR_TO_CT, atol=1e-7)
    np.testing.assert_allclose(transform(reg, PET, CT), np.linalg.inv(MR_TO_CT), atol=1e-7)
    assert registration_to_json(reg)["deformable_items"][0]["grid_applied"] is False


def test_malformed_registration_warns() -> None:
    bad = reg_item(MR, [MR_TO_CT])
    bad.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix = [
        "1", "0"]
    empty = Dataset()
    ds = registration_dataset(CT, [bad, empty])
    del ds.FrameOfReferenceUID
    reg = parse_registration(ds)
    assert reg.items == [] and len(reg.warnings) >= 3
    other = Dataset()
    other.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(NotAnRtObject):
        parse_registration(other)
