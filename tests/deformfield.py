"""The analytic deformation the deformable-registration tests share, and the Deformable
Spatial Registration that carries it.

Frames: the registration's own (registered) Frame of Reference is the generator's CT frame;
the source Frame of Reference is its MR frame. Per PS3.3 C.20.3.1.1 a CT point p maps to the
MR point Post · (Pre · p + D(p)). The field is D(p) = A · p + t, linear, so trilinear
interpolation between grid points reproduces it exactly and the inverse is known in closed
form: p = (I + A)⁻¹ · (Post⁻¹ · s − pre_shift − t).
"""

from __future__ import annotations

import numpy as np
from pydicom.uid import UID

from conformance import generate as gen

DEFORMABLE = UID("1.2.840.10008.5.1.4.1.1.66.3")
A = np.array([[0.02, 0.0, 0.01], [0.0, -0.01, 0.0], [0.005, 0.0, 0.03]])
T = np.array([1.0, -2.0, 0.5])
PRE = np.eye(4)
PRE[:3, 3] = (5.0, 0.0, 0.0)
POST = np.array([[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0],
                 [0.0, 0.0, 0.0, 1.0]])  # 90° about z, then 2 mm along z
GRID_ORIGIN = np.array([-60.0, -60.0, -30.0])
GRID_RESOLUTION = np.array([6.0, 6.0, 6.0])
GRID_DIMENSIONS = (21, 21, 11)  # x, y, z: the grid spans ±60, ±60, ±30 mm


def to_source(p: np.ndarray) -> np.ndarray:
    q = p @ PRE[:3, :3].T + PRE[:3, 3] + p @ A.T + T
    return q @ POST[:3, :3].T + POST[:3, 3]


def to_registered(s: np.ndarray) -> np.ndarray:
    post_inv = np.linalg.inv(POST)
    u = s @ post_inv[:3, :3].T + post_inv[:3, 3] - PRE[:3, 3] - T
    return u @ np.linalg.inv(np.eye(3) + A).T


def inside_grid(p: np.ndarray) -> np.ndarray:
    hi = GRID_ORIGIN + GRID_RESOLUTION * (np.array(GRID_DIMENSIONS) - 1)
    return np.all((p >= GRID_ORIGIN - 1e-6) & (p <= hi + 1e-6), axis=-1)


def deformable_registration(rt: gen.RtStudy):
    ds = gen._new_instance(DEFORMABLE, rt.instance_uid("dreg"), rt.patient, rt.study)
    gen._set_series(ds, "REG", rt.series_uid("dreg"), 6, "Deformable MR to CT", rt.study)
    ds.InstanceNumber, ds.ContentDate, ds.ContentTime = 1, "20240601", "120000"
    ds.FrameOfReferenceUID = rt.for_ct
    nx, ny, nz = GRID_DIMENSIONS
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    points = GRID_ORIGIN + np.stack([i, j, k], axis=-1) * GRID_RESOLUTION
    vectors = (points @ A.T + T).astype("<f4")  # (nz, ny, nx, 3): x fastest
    matrix = [gen._ds(v) for v in PRE.ravel()], [gen._ds(v) for v in POST.ravel()]
    ds.DeformableRegistrationSequence = [gen._item(
        SourceFrameOfReferenceUID=rt.for_mr,
        PreDeformationMatrixRegistrationSequence=[gen._item(
            FrameOfReferenceTransformationMatrix=matrix[0],
            FrameOfReferenceTransformationMatrixType="RIGID")],
        PostDeformationMatrixRegistrationSequence=[gen._item(
            FrameOfReferenceTransformationMatrix=matrix[1],
            FrameOfReferenceTransformationMatrixType="RIGID")],
        DeformableRegistrationGridSequence=[gen._item(
            ImagePositionPatient=[gen._ds(v) for v in GRID_ORIGIN],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            GridDimensions=list(GRID_DIMENSIONS),
            GridResolution=[float(v) for v in GRID_RESOLUTION],
            VectorGridData=vectors.tobytes())])]
    return ds
