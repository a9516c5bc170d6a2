"""Spatial Registration (PS3.3 C.20.2) and Deformable Spatial Registration (C.20.3).

Semantics, from PS3.3 C.20.2.1.1 "Frame of Reference Transformation Matrix": the matrix
``ᴬM_B`` of a Registration Sequence item "describes how to transform a point (Bx, By, Bz)
with respect to RCS_B into (Ax, Ay, Az) with respect to RCS_A", where RCS_B is the item's
Frame of Reference (the referenced images) and RCS_A is the *Registered RCS* – the Frame of
Reference UID of the registration instance itself (C.20.2: "Each item defines a spatial
registration of the images referenced in that item to the Registered RCS established by
this SOP instance"). So an item matrix maps FROM the item's FoR TO the registration's FoR::

    [Ax Ay Az 1]ᵀ = ᴬM_B · [Bx By Bz 1]ᵀ

The 16 values of Frame of Reference Transformation Matrix (3006,00C6) are in row-major
order (M11 M12 M13 M14 M21 …), the last row being 0 0 0 1.

When the Matrix Sequence (0070,030A) has several items M1, M2, …, Mn (C.20.2.1.1), they are
applied in sequence order to the point, i.e. ``ᴬM_B = Mn · … · M2 · M1`` (Equation C.20.2-2;
SlicerRT's reader multiplies M1 · M2 · M3 instead, which readers of the standard have flagged).

Deformable registrations (C.20.3): each Deformable Registration Sequence item carries an
optional Pre Deformation Matrix, the Deformable Registration Grid (a displacement field) and a
Post Deformation Matrix, applied in that order to Registered RCS coordinates to give the
Source RCS coordinate (C.20.3.1.1): the other direction from a Registration Sequence item's
matrix. An item with a grid is excluded from :func:`transform` (a rigid approximation would be
wrong; :mod:`.deformable` applies it point by point); an item without a grid is the matrix
``Post · Pre`` mapping the registered FoR into the source FoR.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d
from .errors import InvalidGeometry, NoRegistrationPath, RtError

RIGID_TOLERANCE = 1e-3


class MatrixType(str, enum.Enum):
    """Frame of Reference Transformation Matrix Type (0070,030C), PS3.3 C.20.2.1.2."""

    RIGID = "RIGID"
    RIGID_SCALE = "RIGID_SCALE"
    AFFINE = "AFFINE"


def _as_matrix(m: np.ndarray | Iterable[float]) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.size != 16:
        raise InvalidGeometry(f"a transformation matrix has 16 values, got {a.size}")
    a = a.reshape(4, 4)
    if not np.all(np.isfinite(a)):
        raise InvalidGeometry("transformation matrix has non-finite values")
    if not np.allclose(a[3], [0, 0, 0, 1], atol=1e-6):
        raise InvalidGeometry("the last row of a transformation matrix must be 0 0 0 1")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise InvalidGeometry("transformation matrix is singular")
    return a


@dataclass(frozen=True, eq=False)
class RegistrationItem:
    """One Registration Sequence item: ``matrix`` maps ``source_for_uid`` → registered FoR."""

    source_for_uid: str | None
    matrix: np.ndarray
    matrix_types: tuple[MatrixType | str, ...] = ()
    referenced_image_uids: tuple[str, ...] = ()
    comment: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "matrix", _as_matrix(self.matrix))
        object.__setattr__(self, "matrix_types", tuple(self.matrix_types))
        object.__setattr__(self, "referenced_image_uids", tuple(self.referenced_image_uids))

    @property
    def is_rigid(self) -> bool:
        r = self.matrix[:3, :3]
        return bool(np.allclose(r.T @ r, np.eye(3), atol=RIGID_TOLERANCE))


@dataclass(frozen=True, eq=False)
class DeformableItem:
    """One Deformable Registration Sequence item (C.20.3); its grid is applied by
    :mod:`.deformable`, not here."""

    source_for_uid: str | None
    pre_matrix: np.ndarray
    post_matrix: np.ndarray
    has_grid: bool
    grid_dimensions: tuple[int, ...] | None = None
    referenced_image_uids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "pre_matrix", _as_matrix(self.pre_matrix))
        object.__setattr__(self, "post_matrix", _as_matrix(self.post_matrix))

    @property
    def rigid_part(self) -> np.ndarray:
        """``Post · Pre``: maps the registered FoR into the source FoR (C.20.3.1.1)."""
        return self.post_matrix @ self.pre_matrix


@dataclass(eq=False)
class Registration:
    """A (deformable) spatial registration instance."""

    sop_instance_uid: str | None
    registered_for_uid: str | None  # Frame of Reference UID of the instance = RCS_A
    deformable: bool = False
    series_instance_uid: str | None = None
    content_date: str | None = None
    items: list[RegistrationItem] = field(default_factory=list)
    deformable_items: list[DeformableItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def frame_of_reference_uids(self) -> list[str]:
        out = [self.registered_for_uid] if self.registered_for_uid else []
        for i in [*self.items, *self.deformable_items]:
            if i.source_for_uid and i.source_for_uid not in out:
                out.append(i.source_for_uid)
        return out


# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------
def parse_registration(ds: Dataset) -> Registration:
    """Parse a Spatial Registration or Deformable Spatial Registration dataset."""
    d.check_kind(ds, [d.SPATIAL_REGISTRATION_SOP_CLASS, d.DEFORMABLE_REGISTRATION_SOP_CLASS],
                 ["REG"], "a Spatial Registration")
    w: list[str] = []
    deformable = str(ds.get("SOPClassUID", "")) == d.DEFORMABLE_REGISTRATION_SOP_CLASS or (
        "DeformableRegistrationSequence" in ds and "RegistrationSequence" not in ds)
    reg = Registration(
        sop_instance_uid=d.text(ds, "SOPInstanceUID", w),
        registered_for_uid=d.text(ds, "FrameOfReferenceUID", w),
        deformable=deformable,
        series_instance_uid=d.text(ds, "SeriesInstanceUID"),
        content_date=d.text(ds, "ContentDate"),
        warnings=w,
    )
    if deformable:
        for i, item in enumerate(d.sequence(ds, "DeformableRegistrationSequence", w)):
            parsed = _parse_deformable_item(item, w, f"DeformableRegistrationSequence[{i}]: ")
            if parsed is not None:
                reg.deformable_items.append(parsed)
    else:
        for i, item in enumerate(d.sequence(ds, "RegistrationSequence", w)):
            parsed = _parse_item(item, w, f"RegistrationSequence[{i}]: ")
            if parsed is not None:
                reg.items.append(parsed)
    return reg


def _image_uids(item: Dataset) -> tuple[str, ...]:
    return tuple(d.uids(d.sequence(item, "ReferencedImageSequence")))


def _source_for(item: Dataset, keyword: str, w: list[str], ctx: str) -> str | None:
    uid = d.text(item, keyword)
    if uid is None and not _image_uids(item):
        w.append(f"{ctx}neither {keyword} nor ReferencedImageSequence is present")
    return uid


def _parse_matrix_registration(seq_item: Dataset, w: list[str], ctx: str
                               ) -> tuple[np.ndarray, list[MatrixType | str], str | None] | None:
    """Combine the Matrix Sequence items of one Matrix Registration Sequence item."""
    combined = np.eye(4)
    types: list[MatrixType | str] = []
    matrices = d.sequence(seq_item, "MatrixSequence", w, ctx)
    if not matrices:
        return None
    for j, m in enumerate(matrices):
        values = d.numbers(m, "FrameOfReferenceTransformationMatrix", w, f"{ctx}Matrix[{j}]: ",
                           count=16)
        if values is None:
            return None
        try:
            mat = _as_matrix(values)
        except RtError as exc:
            w.append(f"{ctx}Matrix[{j}]: {exc}")
            return None
        combined = mat @ combined  # C.20.2.1.1: M = Mn · … · M2 · M1
        t = d.text(m, "FrameOfReferenceTransformationMatrixType", w, f"{ctx}Matrix[{j}]: ")
        if t is not None:
            try:
                types.append(MatrixType(t))
            except ValueError:
                w.append(f"{ctx}Matrix[{j}]: unknown matrix type {t!r}")
                types.append(t)
    comment = d.text(seq_item, "FrameOfReferenceTransformationComment")
    return combined, types, comment


def _parse_item(item: Dataset, w: list[str], ctx: str) -> RegistrationItem | None:
    source = _source_for(item, "FrameOfReferenceUID", w, ctx)
    mrs = d.sequence(item, "MatrixRegistrationSequence", w, ctx)
    if not mrs:
        return None
    if len(mrs) > 1:
        w.append(f"{ctx}MatrixRegistrationSequence has {len(mrs)} items; only the first is used")
    parsed = _parse_matrix_registration(mrs[0], w, ctx)
    if parsed is None:
        return None
    matrix, types, comment = parsed
    result = RegistrationItem(source, matrix, tuple(types), _image_uids(item), comment)
    if MatrixType.RIGID in types and not result.is_rigid:
        w.append(f"{ctx}matrix declared RIGID is not orthonormal")
    return result


def _parse_deformable_item(item: Dataset, w: list[str], ctx: str) -> DeformableItem | None:
    source = _source_for(item, "SourceFrameOfReferenceUID", w, ctx)
    pre = post = np.eye(4)
    for keyword in ("PreDeformationMatrixRegistrationSequence",
                    "PostDeformationMatrixRegistrationSequence"):
        seq = d.sequence(item, keyword)
        if not seq:
            continue
        values = d.numbers(seq[0], "FrameOfReferenceTransformationMatrix", w,
                           f"{ctx}{keyword}: ", count=16)
        if values is None:
            continue
        try:
            mat = _as_matrix(values)
        except RtError as exc:
            w.append(f"{ctx}{keyword}: {exc}")
            continue
        if keyword.startswith("Pre"):
            pre = mat
        else:
            post = mat
    grids = d.sequence(item, "DeformableRegistrationGridSequence")
    dims = None
    if grids:
        g = d.numbers(grids[0], "GridDimensions")
        dims = tuple(int(v) for v in g) if g is not None else None
    return DeformableItem(source, pre, post, bool(grids), dims, _image_uids(item))


# ----------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------
def _edges(regs: Iterable[Registration]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Directed graph FoR -> [(FoR, matrix mapping the first into the second)]."""
    graph: dict[str, list[tuple[str, np.ndarray]]] = {}

    def add(src: str, dst: str, m: np.ndarray) -> None:
        graph.setdefault(src, []).append((dst, m))
        graph.setdefault(dst, []).append((src, np.linalg.inv(m)))

    for reg in regs:
        hub = reg.registered_for_uid
        if not hub:
            continue
        for item in reg.items:
            if item.source_for_uid:
                add(item.source_for_uid, hub, item.matrix)
        for ditem in reg.deformable_items:
            if ditem.source_for_uid and not ditem.has_grid:
                add(hub, ditem.source_for_uid, ditem.rigid_part)
    return graph


def transform(regs: Registration | Iterable[Registration], from_for: str, to_for: str
              ) -> np.ndarray:
    """4×4 matrix mapping points in ``from_for`` to ``to_for``.

    Items are composed and inverted through the registered FoR of each registration (the
    hub); several registrations may be chained (breadth-first, shortest chain). Raises
    :class:`NoRegistrationPath` when the Frames of Reference are not connected.
    """
    if from_for == to_for:
        return np.eye(4)
    regs = [regs] if isinstance(regs, Registration) else list(regs)
    graph = _edges(regs)
    seen = {from_for: np.eye(4)}
    queue = deque([from_for])
    while queue:
        node = queue.popleft()
        for nxt, m in graph.get(node, []):
            if nxt in seen:
                continue
            seen[nxt] = m @ seen[node]
            if nxt == to_for:
                return seen[nxt]
            queue.append(nxt)
    raise NoRegistrationPath(from_for, to_for)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 homogeneous matrix to points (N,3) or (3,); returns the same shape."""
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    p = np.asarray(points, dtype=np.float64)
    flat = p.reshape(-1, 3)
    out = flat @ m[:3, :3].T + m[:3, 3]
    return out.reshape(p.shape)
