"""What an RT Ion Plan (PS3.3 A.49, C.8.8.25) adds to a plan's beams: scan mode, virtual
source-axis distances, snouts, range shifters, lateral spreading devices, range modulators and,
per Ion Control Point, the nominal energy, snout position, range shifter settings and the spot
map (Scan Spot Position Map, pairs of x, y in mm at isocentre, with their Scan Spot Meterset
Weights).

Read from the stored file when an ion plan is asked for (spot maps can hold tens of thousands
of values per beam; the index keeps what every plan has).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from . import _dicom as d


def _floats(ds: Dataset, keyword: str) -> list[float] | None:
    values = d.numbers(ds, keyword)
    return None if values is None else [float(v) for v in np.atleast_1d(values)]


def _devices(beam: Dataset, sequence: str, id_keyword: str, type_keyword: str | None
             ) -> list[dict]:
    out = []
    for item in d.sequence(beam, sequence):
        number_keyword = sequence.replace("Sequence", "Number")
        out.append({"number": d.integer(item, number_keyword), "id": d.text(item, id_keyword),
                    "type": d.text(item, type_keyword) if type_keyword else None,
                    "accessory_code": d.text(item, "AccessoryCode")})
    return out


def _control_point(cp: Dataset) -> dict[str, Any]:
    spots = d.numbers(cp, "ScanSpotPositionMap")
    weights = _floats(cp, "ScanSpotMetersetWeights")
    return {
        "nominal_beam_energy": d.number(cp, "NominalBeamEnergy"),
        "snout_position": d.number(cp, "SnoutPosition"),
        "meterset_rate": d.number(cp, "MetersetRate"),
        "scan_spot_tune_id": d.text(cp, "ScanSpotTuneID"),
        "number_of_scan_spot_positions": d.integer(cp, "NumberOfScanSpotPositions"),
        "scan_spot_positions": None if spots is None
        else np.asarray(spots, dtype=float)[: spots.size // 2 * 2].reshape(-1, 2).tolist(),
        "scan_spot_meterset_weights": weights,
        "scanning_spot_size": _floats(cp, "ScanningSpotSize"),
        "number_of_paintings": d.integer(cp, "NumberOfPaintings"),
        "range_shifter_settings": [{
            "referenced_range_shifter_number": d.integer(s, "ReferencedRangeShifterNumber"),
            "setting": d.text(s, "RangeShifterSetting"),
            "isocenter_to_range_shifter_distance": d.number(s, "IsocenterToRangeShifterDistance"),
            "water_equivalent_thickness": d.number(s, "RangeShifterWaterEquivalentThickness")}
            for s in d.sequence(cp, "RangeShifterSettingsSequence")],
    }


def ion_beams(ds: Dataset, control_points: bool) -> dict[int | None, dict]:
    """Per Beam Number, the ion-only part of each Ion Beam Sequence item."""
    out: dict[int | None, dict] = {}
    for beam in d.sequence(ds, "IonBeamSequence"):
        entry: dict[str, Any] = {
            "scan_mode": d.text(beam, "ScanMode"),
            "virtual_source_axis_distances": _floats(beam, "VirtualSourceAxisDistances"),
            "snouts": [{"id": d.text(s, "SnoutID"), "accessory_code": d.text(s, "AccessoryCode")}
                       for s in d.sequence(beam, "SnoutSequence")],
            "range_shifters": _devices(beam, "RangeShifterSequence", "RangeShifterID",
                                       "RangeShifterType"),
            "lateral_spreading_devices": _devices(beam, "LateralSpreadingDeviceSequence",
                                                  "LateralSpreadingDeviceID",
                                                  "LateralSpreadingDeviceType"),
            "range_modulators": _devices(beam, "RangeModulatorSequence", "RangeModulatorID",
                                         "RangeModulatorType"),
        }
        if control_points:
            entry["control_points"] = [_control_point(cp)
                                       for cp in d.sequence(beam, "IonControlPointSequence")]
        out[d.integer(beam, "BeamNumber")] = entry
    return out
