"""RT Dose parsing, trilinear sampling and resampling."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomweb.rt import Grid, NotAnRtObject
from dicomweb.rt.dose import (
    OffsetConvention,
    dose_at_point,
    dose_values,
    maximum,
    parse_dose,
    resample_dose,
)


def linear(xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=float)
    return 10.0 + 0.1 * xyz[..., 0] - 0.05 * xyz[..., 1] + 0.2 * xyz[..., 2]


def rtdose_dataset(grid: Grid, values: np.ndarray, *, absolute: bool = False,
                   scaling: float = 1e-4) -> Dataset:
    """An RTDOSE built in code from a grid and dose values in Gy."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    ds.SOPInstanceUID = "1.2.3.4.200"
    ds.Modality = "RTDOSE"
    ds.FrameOfReferenceUID = "1.2.3.4.9"
    ds.ImagePositionPatient = [float(v) for v in grid.origin]
    ds.ImageOrientationPatient = [*map(float, grid.row_direction),
                                  *map(float, grid.column_direction)]
    ds.PixelSpacing = [grid.row_spacing, grid.column_spacing]
    offs = grid.slice_offsets
    ds.GridFrameOffsetVector = [float(v) for v in
                                (offs + grid.origin[2] if absolute else offs - offs[0])]
    ds.Rows, ds.Columns = grid.rows, grid.columns
    ds.NumberOfFrames = grid.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = scaling
    ds.PixelData = np.round(values / scaling).astype("<u4").tobytes()
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    ref.ReferencedSOPInstanceUID = "1.2.3.4.300"
    ds.ReferencedRTPlanSequence = [ref]
    return ds


def test_pydicom_rtdose_files() -> None:
    for name in ("rtdose.dcm", "rtdose_1frame.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        dose = parse_dose(ds)
        values = dose_values(ds, dose)
        assert values.dtype == np.float32
        assert values.shape == (int(ds.get("NumberOfFrames", 1)), ds.Rows, ds.Columns)
        np.testing.assert_allclose(values.max(), ds.pixel_array.max() * float(ds.DoseGridScaling),
                                   rtol=1e-6)
        assert dose.units.value == "RELATIVE" and dose.summation_type == "BEAM"
        assert dose.referenced_plan_uids == [ds.ReferencedRTPlanSequence[0]
                                             .ReferencedSOPInstanceUID]
    dose = parse_dose(pydicom.dcmread(get_testdata_file("rtdose.dcm")))
    assert dose.offset_convention is OffsetConvention.RELATIVE
    np.testing.assert_allclose(dose.grid.slice_offsets, np.arange(15) * 5.0)
    one = parse_dose(pydicom.dcmread(get_testdata_file("rtdose_1frame.dcm")))
    assert one.grid.shape == (1, 10, 10) and one.warnings  # 15 offsets for 1 frame


@pytest.mark.parametrize("absolute", [False, True])
def test_linear_field_is_exact(absolute: bool) -> None:
    grid = Grid.regular((-20.0, -30.0, 100.0), (2.0, 3.0, 2.5), (21, 19, 13))
    values = linear(grid.voxel_centres())
    ds = rtdose_dataset(grid, values, absolute=absolute)
    dose = parse_dose(ds)
    assert dose.offset_convention is (OffsetConvention.ABSOLUTE if absolute
                                      else OffsetConvention.RELATIVE)
    np.testing.assert_allclose(dose.grid.slice_offsets, grid.slice_offsets)
    vals = dose_values(ds, dose)
    rng = np.random.default_rng(1)
    for p in rng.uniform([-20, -30, 100], [20, 24, 130], size=(50, 3)):
        assert dose_at_point(dose, vals, p) == pytest.approx(float(linear(p)), abs=2e-3)
    assert dose_at_point(dose, vals, (0, 0, 99.0)) is None
    assert dose_at_point(dose, vals, (21.0, 0, 110)) is None
    vmax, pos = maximum(dose, vals)
    assert vmax == pytest.approx(float(values.max()), abs=1e-3)
    assert float(linear(pos)) == pytest.approx(vmax, abs=1e-3)


def test_sagittal_dose_grid() -> None:
    # Rows along -z, columns along +y, frames along the normal y x (-z) = -x.
    grid = Grid(np.array([30.0, -40.0, 50.0]), np.array([0, 1.0, 0]), np.array([0, 0, -1.0]),
                2.0, 2.5, np.arange(12) * 3.0, 40, 33)
    np.testing.assert_allclose(grid.normal, [-1, 0, 0])
    ds = rtdose_dataset(grid, linear(grid.voxel_centres()))
    dose = parse_dose(ds)
    vals = dose_values(ds, dose)
    for p in ([0.0, 0.0, 0.0], [25.0, 30.0, -20.0], [-2.0, -35.0, 45.0]):
        assert dose_at_point(dose, vals, p) == pytest.approx(float(linear(np.array(p))),
                                                             abs=2e-3)
    assert dose_at_point(dose, vals, (31.0, 0, 0)) is None


def test_non_uniform_and_reversed_offsets() -> None:
    offsets = np.array([0.0, -2.0, -4.0, -7.0, -12.0])
    grid = Grid(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 1.0, 1.0, offsets,
                10, 10)
    vals = linear(grid.voxel_centres()).astype(np.float32)
    for z in (-1.0, -5.5, -11.0):
        assert dose_at_point(grid, vals, (3.3, 4.4, z)) == pytest.approx(
            float(linear(np.array([3.3, 4.4, z]))), abs=1e-4)


def test_resample_linear_exact_and_fill() -> None:
    grid = Grid.regular((-50.0, -50.0, -50.0), (2.5, 2.5, 2.5), (41, 41, 41))
    vals = linear(grid.voxel_centres()).astype(np.float32)
    a = np.radians(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    target = Grid.regular((-20.0, -20.0, -20.0), (1.0, 1.0, 1.0), (40, 40, 40), rot)
    out = resample_dose(grid, vals, target)
    np.testing.assert_allclose(out, linear(target.voxel_centres()), atol=1e-3)
    outside = Grid.regular((40.0, 40.0, 40.0), (5.0, 5.0, 5.0), (4, 4, 4))
    res = resample_dose(grid, vals, outside, fill=-1.0)
    assert res[0, 0, 0] == pytest.approx(float(linear(np.array([40.0, 40, 40]))), abs=1e-3)
    assert res[-1, -1, -1] == -1.0


def test_missing_attributes_warn() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    dose = parse_dose(ds)
    assert dose.grid is None and not dose.has_pixel_data and dose.warnings
    grid = Grid.regular((0, 0, 0), (1, 1, 1), (3, 3, 3))
    ds = rtdose_dataset(grid, np.ones(grid.shape))
    del ds.GridFrameOffsetVector, ds.DoseGridScaling, ds.ReferencedRTPlanSequence
    dose = parse_dose(ds)
    assert dose.grid is not None and dose.scaling == 1.0
    assert any("GridFrameOffsetVector" in w for w in dose.warnings)
    other = Dataset()
    other.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    with pytest.raises(NotAnRtObject):
        parse_dose(other)


def test_resample_non_uniform_source_matches_linear() -> None:
    offsets = np.array([0.0, 2.0, 5.0, 9.0, 14.0, 20.0])
    grid = Grid(np.array([-10.0, -10.0, 0.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
                2.0, 2.0, offsets, 11, 11)
    vals = linear(grid.voxel_centres()).astype(np.float32)
    target = Grid.regular((-8.0, -8.0, 1.0), (1.5, 1.5, 1.5), (10, 10, 12))
    np.testing.assert_allclose(resample_dose(grid, vals, target),
                               linear(target.voxel_centres()), atol=1e-3)
