"""Spatial and deformable registrations from the index: the matrix relating two Frames of
Reference, and the function mapping points through a deformable registration's grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from pydicom import dcmread
from sqlalchemy import Engine
from sqlmodel import Session, select

from dicomweb.errors import NotFound, Unprocessable
from dicomweb.store.repository import Store

from .. import _dicom as d
from ..deformable import Deformation, deformations
from ..errors import NoRegistrationPath, RtError
from ..registration import DeformableItem, Registration, RegistrationItem, transform
from ..tables import SpatialRegistrationRow, TransformationMatrixRow
from .instances import instance_by_sop, loads


def registration_objects(engine: Engine, sops: Sequence[str]) -> list[Registration]:
    """Registrations rebuilt from the index rows of the given REG instances."""
    if not sops:
        return []
    with Session(engine) as session:
        regs = session.exec(select(SpatialRegistrationRow).where(
            SpatialRegistrationRow.sop_instance_uid.in_(list(sops)))).all()  # type: ignore[attr-defined]
        matrices = session.exec(select(TransformationMatrixRow).where(
            TransformationMatrixRow.sop_instance_uid.in_(list(sops))  # type: ignore[attr-defined]
        ).order_by(TransformationMatrixRow.id)).all()
    out = []
    for reg in regs:
        obj = Registration(reg.sop_instance_uid, reg.registered_frame_of_reference_uid,
                           reg.deformable, reg.series_instance_uid,
                           warnings=loads(reg.warnings) or [])
        for m in matrices:
            if m.sop_instance_uid != reg.sop_instance_uid:
                continue
            matrix = np.array(loads(m.matrix), dtype=np.float64)
            if m.matrix_type == "DEFORMABLE":
                obj.deformable_items.append(DeformableItem(
                    m.source_frame_of_reference_uid, np.eye(4), matrix, m.deformable_grid))
            else:
                types = tuple((m.matrix_type or "").split("\\")) if m.matrix_type else ()
                obj.items.append(RegistrationItem(m.source_frame_of_reference_uid, matrix,
                                                  types))
        out.append(obj)
    return out


def study_registration_uids(engine: Engine, study: str) -> list[str]:
    from dicomweb.store.tables import Instance

    with Session(engine) as session:
        return list(session.exec(select(Instance.sop_instance_uid).where(
            Instance.study_instance_uid == study,
            Instance.sop_class_uid.in_([  # type: ignore[attr-defined]
                d.SPATIAL_REGISTRATION_SOP_CLASS, d.DEFORMABLE_REGISTRATION_SOP_CLASS]))).all())


def frame_transform(engine: Engine, registration: str | None, from_for: str | None,
                    to_for: str | None, *, what: str,
                    grid_reason: str = "this resource applies matrices only",
                    ) -> tuple[np.ndarray, str | None]:
    """4×4 matrix mapping points of ``from_for`` into ``to_for``.

    Identity when the Frames of Reference are equal; otherwise the REG instance
    ``registration`` (query parameter ``registration``) must link them, else 422 (saying
    ``grid_reason`` when only a Deformable Registration Grid links them: no matrix stands
    for a deformation).
    """
    if from_for and to_for and from_for == to_for:
        return np.eye(4), None
    if not from_for or not to_for:
        raise Unprocessable(f"{what}: a Frame of Reference is unknown, so positions cannot be "
                            "related")
    if not registration:
        raise Unprocessable(
            f"{what}: Frames of Reference differ ({from_for} vs {to_for}); give "
            "registration={REG SOP Instance UID} to relate them", parameter="registration")
    regs = registration_objects(engine, [registration])
    if not regs:
        raise NotFound(f"no Spatial Registration {registration} is stored",
                       parameter="registration")
    try:
        return transform(regs, from_for, to_for), registration
    except NoRegistrationPath as exc:
        if relates_through_grid(regs[0], from_for, to_for):
            raise Unprocessable(
                f"{what}: registration {registration} relates {from_for} and {to_for} only "
                f"through its Deformable Registration Grid, which no matrix stands for; "
                f"{grid_reason}", parameter="registration") from exc
        raise Unprocessable(f"{what}: registration {registration} does not relate "
                            f"{from_for} to {to_for} ({exc})", parameter="registration") from exc


def relates_through_grid(reg: Registration, a: str, b: str) -> bool:
    """True if a Deformable Registration Sequence item with a grid links frames a and b."""
    hub = reg.registered_for_uid
    return any(i.has_grid and {i.source_for_uid, hub} == {a, b} for i in reg.deformable_items)


@lru_cache(maxsize=4)
def _deformations_of(path: str) -> tuple[Deformation, ...]:
    try:
        return tuple(deformations(dcmread(path)))
    except RtError as exc:
        raise Unprocessable(f"deformable registration: {exc}") from exc


def deformation_mapper(store: Store, registration: str | None, from_for: str | None,
                       to_for: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """When ``registration`` is a Deformable Spatial Registration whose grid relates the two
    Frames of Reference: the function mapping points of ``from_for`` into ``to_for`` through
    the grid (:mod:`.deformable`); None otherwise (matrices answer)."""
    if not registration or not from_for or not to_for or from_for == to_for:
        return None
    regs = registration_objects(store.engine, [registration])
    if not regs or not any(i.has_grid for i in regs[0].deformable_items):
        return None
    loc = instance_by_sop(store, registration, "REG", parameter="registration")
    for deformation in _deformations_of(str(store.blobs.path(loc.blob_key))):
        mapper = deformation.mapper(from_for, to_for)
        if mapper is not None:
            return mapper
    return None
