"""RT (Ion) Plans from the index: the plan row with its fraction groups and beams, as the plan
resource and a plan's delivery progress both read them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from ..tables import RtBeamRow, RtFractionGroupRow, RtPlanRow
from .instances import not_indexed


@dataclass(frozen=True)
class PlanRows:
    plan: RtPlanRow
    fraction_groups: list[RtFractionGroupRow]  # in the plan's order
    beams: list[RtBeamRow]  # in the plan's order


def plan_rows(session: Session, sop: str) -> PlanRows:
    """The index rows of RT Plan ``sop``; 422 when it is stored but was not indexed."""
    plan = session.exec(select(RtPlanRow).where(RtPlanRow.sop_instance_uid == sop)).first()
    if plan is None:
        raise not_indexed(sop, "RT Plan")
    groups = session.exec(select(RtFractionGroupRow).where(
        RtFractionGroupRow.sop_instance_uid == sop).order_by(RtFractionGroupRow.id)).all()
    beams = session.exec(select(RtBeamRow).where(RtBeamRow.sop_instance_uid == sop)
                         .order_by(RtBeamRow.id)).all()
    return PlanRows(plan, list(groups), list(beams))
