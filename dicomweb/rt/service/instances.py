"""Which RT object an instance is, and finding it: by its path, or by SOP Instance UID alone
(the overlays and registrations of rendered and MPR images name RT objects that way)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlmodel import Session, select

from dicomweb.errors import NotFound, Unprocessable
from dicomweb.store.repository import InstanceLocation, Store

from .. import _dicom as d
from ..fiducials import FIDUCIALS_SOP_CLASS
from ..rtimage import RTIMAGE_SOP_CLASS

KINDS = {
    **d.INDEXED_KINDS,
    FIDUCIALS_SOP_CLASS: "FIDUCIALS",
    RTIMAGE_SOP_CLASS: "RTIMAGE",
}
KIND_NAMES = {
    "RTSTRUCT": "an RT Structure Set",
    "RTPLAN": "an RT (Ion) Plan",
    "RTDOSE": "an RT Dose",
    "REG": "a (Deformable) Spatial Registration",
    "RTRECORD": "an RT (Ion) Beams Treatment Record",
    "FIDUCIALS": "a Spatial Fiducials instance",
    "RTIMAGE": "an RT Image",
}


def loads(value: Any) -> Any:
    return orjson.loads(value) if value else None


def locate_rt(store: Store, study: str, series: str, sop: str, kind: str) -> InstanceLocation:
    """The instance at the path, which must be of ``kind``; NotFound otherwise (the RT
    sub-resource does not exist for other objects)."""
    loc = store.locate(study, series, sop)[0]
    actual = KINDS.get(loc.sop_class_uid)
    if actual != kind:
        what = KIND_NAMES[actual] if actual else f"SOP Class {loc.sop_class_uid or '?'}"
        raise NotFound(
            f"instance {sop} is {what}, not {KIND_NAMES[kind]}; this RT resource exists only "
            f"for {kind} instances"
        )
    return loc


def not_indexed(sop: str, what: str) -> Unprocessable:
    return Unprocessable(
        f"{what} {sop} is stored but its RT content could not be indexed (see the warnings "
        "returned when it was stored)"
    )


def instance_by_sop(store: Store, sop: str, kind: str, *, parameter: str) -> InstanceLocation:
    """The stored instance with this SOP Instance UID (any study), which must be of ``kind``;
    404 naming ``parameter`` otherwise."""
    from dicomweb.store.tables import Instance

    with Session(store.engine) as session:
        row = session.exec(select(Instance.study_instance_uid, Instance.series_instance_uid)
                           .where(Instance.sop_instance_uid == sop)).first()
    if row is None:
        raise NotFound(f"no instance {sop} is stored ({parameter})", parameter=parameter)
    try:
        loc = store.locate(row[0], row[1], sop)[0]
    except NotFound:  # deleted meanwhile
        raise NotFound(f"no instance {sop} is stored ({parameter})", parameter=parameter) from None
    actual = KINDS.get(loc.sop_class_uid)
    if actual != kind:
        what = KIND_NAMES[actual] if actual else f"of SOP Class {loc.sop_class_uid or '?'}"
        raise NotFound(f"{parameter}: instance {sop} is {what}, not {KIND_NAMES[kind]}",
                       parameter=parameter)
    return loc
