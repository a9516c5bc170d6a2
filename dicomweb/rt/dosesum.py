"""Dose sums: several RT Doses resampled onto one grid and added (PS3.3 C.8.8.3).

Values come in the Dose Units already (Dose Grid Scaling applied by :func:`.dose.dose_values`).
The Dose Summation Type (C.8.8.3: PLAN, MULTI_PLAN, FRACTION, BEAM, BRACHY, ...) says what a
grid already holds, so a sum refuses what would count a dose twice or add unlike things:

* every dose has the same Dose Units, and they are not RELATIVE (relative doses have no common
  scale), and the same Dose Type (PHYSICAL, EFFECTIVE or ERROR are not added together);
* a PLAN (or MULTI_PLAN) dose is not added to a BEAM, FRACTION or CONTROL_POINT dose that
  references the same plan: the beam is already inside the plan's dose;
* the same dose twice is refused by the caller (400).

The sum's own summation type: BEAM doses of one plan make that PLAN; doses of one type and one
plan keep the type; anything else is MULTI_PLAN. Outside a dose's grid its contribution is 0
(a planning system computes dose over the whole region of interest); the fraction of the
target's voxels each dose does not cover is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .deformable import resample_through
from .dose import DoseGrid, resample_dose
from .errors import RtError
from .grid import Grid

PARTS_OF_A_PLAN = {"BEAM", "FRACTION", "CONTROL_POINT", "BEAM_SESSION", "FRACTION_SESSION"}
WHOLE_PLANS = {"PLAN", "MULTI_PLAN"}


class NotSummable(RtError):
    """Doses that cannot be added (units, type or summation type); 422."""


@dataclass(frozen=True, eq=False)
class SumPart:
    """One dose of a sum: its geometry and values, and the 4×4 matrix mapping the target
    grid's patient coordinates into this dose's Frame of Reference (or ``mapper``, a function
    doing it point by point through a deformable registration)."""

    dose: DoseGrid
    values: np.ndarray
    matrix: np.ndarray
    mapper: Callable[[np.ndarray], np.ndarray] | None = None


def _text(value: object) -> str | None:
    value = getattr(value, "value", value)
    return str(value).upper() if value else None


def check_summable(doses: Sequence[DoseGrid]) -> None:
    """Raise :class:`NotSummable` with the reason when ``doses`` cannot be added."""
    units = {_text(d.units) for d in doses}
    if len(units) > 1:
        raise NotSummable(f"doses in different Dose Units ({', '.join(sorted(map(str, units)))}) "
                          "cannot be added")
    if units == {"RELATIVE"}:
        raise NotSummable("RELATIVE doses have no common scale and cannot be added")
    types = {_text(d.dose_type) for d in doses}
    if len(types) > 1:
        raise NotSummable(f"doses of different Dose Type ({', '.join(sorted(map(str, types)))}) "
                          "cannot be added")
    for whole in doses:
        if _text(whole.summation_type) not in WHOLE_PLANS:
            continue
        for part in doses:
            shared = set(whole.referenced_plan_uids) & set(part.referenced_plan_uids)
            if _text(part.summation_type) in PARTS_OF_A_PLAN and shared:
                raise NotSummable(
                    f"dose {part.sop_instance_uid} ({part.summation_type}) is part of plan "
                    f"{sorted(shared)[0]}, whose {whole.summation_type} dose "
                    f"{whole.sop_instance_uid} already holds it")


def summation_type_of_sum(doses: Sequence[DoseGrid]) -> str:
    types = {_text(d.summation_type) for d in doses}
    plans = {tuple(d.referenced_plan_uids) for d in doses}
    if len(plans) == 1 and plans != {()}:
        if types == {"BEAM"}:
            return "PLAN"
        if len(types) == 1 and None not in types:
            return str(next(iter(types)))
    return "MULTI_PLAN"


def sum_onto(target: Grid, parts: Sequence[SumPart]) -> tuple[np.ndarray, list[float]]:
    """The sum on ``target``'s voxels (float32) and, per part, the fraction of those voxels
    outside the part's grid (contributing 0)."""
    total = np.zeros(target.shape, dtype=np.float32)
    outside = []
    for part in parts:
        assert part.dose.grid is not None
        values = (resample_through(part.dose.grid, part.values, target, part.mapper)
                  if part.mapper is not None else
                  resample_dose(part.dose.grid, part.values, target, part.matrix, fill=np.nan))
        missing = np.isnan(values)
        outside.append(float(missing.mean()))
        total += np.where(missing, np.float32(0), values)
    return total, outside
