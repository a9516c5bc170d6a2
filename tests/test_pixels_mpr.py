"""MPR on analytic sphere phantoms: axis-aligned, oblique, uneven and gantry-tilted stacks."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from dicomweb.pixels.errors import NotAVolume
from dicomweb.pixels.mpr import ReformatError, reformat, sample
from dicomweb.pixels.volume import (
    SliceGeometry,
    Volume,
    VolumeCache,
    build_volume_geometry,
    load_volume,
)

CENTER = np.array([12.0, -20.0, 35.0])
RADIUS = 15.0


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    t = math.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


def _stack(
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    positions: list[np.ndarray],
    *,
    size: int = 72,
    spacing: tuple[float, float] = (0.9, 0.8),
) -> tuple[list[SliceGeometry], list[np.ndarray]]:
    """Slices sampling a sphere (value 1 inside, 0 outside, 1-voxel linear edge)."""
    slices, frames = [], []
    rows = cols = size
    ii, jj = np.mgrid[0:rows, 0:cols]
    for k, pos in enumerate(positions):
        pts = (
            pos[None, None, :]
            + (jj * spacing[1])[..., None] * row_dir
            + (ii * spacing[0])[..., None] * col_dir
        )
        dist = np.linalg.norm(pts - CENTER, axis=-1)
        # stored values 0..1000, rescaled back to 0..1 by slope 0.001
        frames.append(np.rint(np.clip(RADIUS - dist + 0.5, 0, 1) * 1000).astype(np.uint16))
        slices.append(
            SliceGeometry(
                sop_instance_uid=f"1.2.3.{k}",
                frame_number=1,
                position=tuple(pos),
                orientation=tuple(row_dir) + tuple(col_dir),
                pixel_spacing=spacing,
                rows=rows,
                columns=cols,
                frame_of_reference_uid="1.2.3.999",
                rescale_slope=0.001,
                rescale_intercept=0.0,
            )
        )
    # shuffle: the geometry must sort along the normal
    order = np.random.default_rng(1).permutation(len(slices))
    return [slices[i] for i in order], [frames[i] for i in order]


def _centered_positions(row_dir, col_dir, distances, size=72, spacing=(0.9, 0.8), shear=None):
    normal = np.cross(row_dir, col_dir)
    half = (size - 1) / 2
    out = []
    for k, d in enumerate(distances):
        corner = CENTER - half * spacing[1] * row_dir - half * spacing[0] * col_dir
        pos = corner + (d - CENTER @ normal) * normal
        if shear is not None:
            pos = pos + shear(k, d)
        out.append(pos)
    return out


def axis_aligned():
    r, c = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    d = CENTER[2] + np.arange(-20, 21) * 1.0
    return _stack(r, c, _centered_positions(r, c, d))


def oblique():
    rot = _rotation((0.3, 1.0, 0.2), 30) @ _rotation((0, 0, 1), 20)
    r, c = rot @ np.array([1.0, 0, 0]), rot @ np.array([0, 1.0, 0])
    n = np.cross(r, c)
    d = CENTER @ n + np.arange(-22, 23) * 0.9
    return _stack(r, c, _centered_positions(r, c, d))


def uneven():
    r, c = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    gaps = np.random.default_rng(7).uniform(0.6, 1.6, size=40)
    d = CENTER[2] - 21 + np.concatenate([[0], np.cumsum(gaps)])
    return _stack(r, c, _centered_positions(r, c, d))


def gantry_tilt():
    """Axial acquisition tilted by 15 degrees: slice origins move along z only, so they
    are not along the slice normal (sheared stack)."""
    tilt = math.radians(15)
    r, c = np.array([1.0, 0, 0]), np.array([0, math.cos(tilt), math.sin(tilt)])
    base = _centered_positions(r, c, [CENTER @ np.cross(r, c)])[0]
    positions = [base + np.array([0, 0, dz]) for dz in np.arange(-22, 23) * 1.0]
    return _stack(r, c, positions)


STACKS = {"axis_aligned": axis_aligned, "oblique": oblique, "uneven": uneven, "tilt": gantry_tilt}
PLANES = [
    ("axial", None),
    ("sagittal", None),
    ("coronal", None),
    ("oblique", (1.0, 1.0, 1.0)),
    ("oblique", (0.2, -0.5, 0.8)),
]


@pytest.fixture(scope="module", params=sorted(STACKS))
def volume(request) -> Volume:
    slices, frames = STACKS[request.param]()
    geometry = build_volume_geometry(slices)
    return load_volume(geometry, frames)


def _disc(result) -> tuple[float, np.ndarray]:
    mask = np.nan_to_num(result.values) > 0.5
    assert mask.any(), "disc not found"
    area = mask.sum() * result.pixel_spacing[0] * result.pixel_spacing[1]
    rows, cols = np.nonzero(mask)
    return math.sqrt(area / math.pi), result.patient_point(rows.mean(), cols.mean())


@pytest.mark.parametrize(("plane", "normal"), PLANES)
def test_sphere_through_centre(volume: Volume, plane: str, normal) -> None:
    result = reformat(volume, plane, normal=normal, point=CENTER)
    radius, centroid = _disc(result)
    voxel = max(volume.geometry.spacing)
    assert abs(radius - RADIUS) < voxel / 2, (radius, voxel)
    assert np.linalg.norm(centroid - CENTER) < voxel / 2
    n = np.asarray(result.normal)
    assert result.position == pytest.approx(CENTER @ n)
    # the plane passes through the centre, and pixel (0, 0) lies on it
    assert np.asarray(result.origin) @ n == pytest.approx(CENTER @ n)


@pytest.mark.parametrize("plane", ["axial", "sagittal", "coronal"])
def test_off_centre_plane_radius(volume: Volume, plane: str) -> None:
    axis = {"axial": 2, "sagittal": 0, "coronal": 1}[plane]
    offset = 9.0
    result = reformat(volume, plane, position_mm=float(CENTER[axis] + offset))
    radius, _ = _disc(result)
    expected = math.sqrt(RADIUS**2 - offset**2)
    assert abs(radius - expected) < max(volume.geometry.spacing) * 1.5


def test_standard_plane_orientation() -> None:
    slices, frames = axis_aligned()
    vol = load_volume(build_volume_geometry(slices), frames)
    axial = reformat(vol, "axial", point=CENTER)
    assert axial.row_direction == (1.0, 0.0, 0.0)
    assert axial.column_direction == (0.0, 1.0, 0.0)
    coronal = reformat(vol, "coronal", point=CENTER)
    assert coronal.column_direction == (0.0, 0.0, -1.0)
    assert coronal.normal == (0.0, 1.0, 0.0)
    sagittal = reformat(vol, "sagittal", point=CENTER)
    assert sagittal.row_direction == (0.0, 1.0, 0.0)
    assert sagittal.normal == (1.0, 0.0, 0.0)
    # head at the top: the top row of the coronal image is the most superior
    top, bottom = coronal.patient_point(0, 0), coronal.patient_point(10, 0)
    assert top[2] > bottom[2]


def test_axial_index_matches_slices_on_axis_aligned_stack() -> None:
    slices, frames = axis_aligned()
    geometry = build_volume_geometry(slices)
    vol = load_volume(geometry, frames)
    first = reformat(vol, "axial", index=0, spacing=(0.9, 0.8))
    assert first.plane_count == len(slices)
    assert first.values.shape == (72, 72)
    np.testing.assert_allclose(first.values, vol.values[0], atol=1e-5)
    mid = reformat(vol, "axial", index=20, spacing=(0.9, 0.8))
    np.testing.assert_allclose(mid.values, vol.values[20], atol=1e-5)
    with pytest.raises(ReformatError):
        reformat(vol, "axial", index=len(slices))


def test_geometry_properties() -> None:
    slices, _ = axis_aligned()
    g = build_volume_geometry(slices)
    assert g.size == (72, 72, 41)
    assert g.spacing == pytest.approx((0.8, 0.9, 1.0))
    assert g.evenly_spaced and not g.sheared
    assert list(g.slice_positions) == sorted(g.slice_positions)
    assert g.frame_of_reference_uid == "1.2.3.999"
    assert len(g.instance_order) == 41
    assert not build_volume_geometry(uneven()[0]).evenly_spaced
    assert build_volume_geometry(gantry_tilt()[0]).sheared
    assert not build_volume_geometry(oblique()[0]).sheared


def test_outside_is_nan_and_modality_units() -> None:
    slices, frames = axis_aligned()
    vol = load_volume(build_volume_geometry(slices), frames)
    assert float(vol.values.max()) == pytest.approx(1.0)
    result = reformat(vol, "oblique", normal=(1, 1, 1), point=CENTER)
    assert np.isnan(result.values).any()  # corners of an oblique grid fall outside
    far = reformat(vol, "axial", position_mm=CENTER[2] + 100)
    assert np.isnan(far.values).all()
    padded = reformat(vol, "axial", position_mm=CENTER[2] + 100, fill=-1000.0)
    assert (padded.values == -1000.0).all()


def _slice(k: int, **changes) -> SliceGeometry:
    values = dict(
        sop_instance_uid=f"1.{k}",
        frame_number=1,
        position=(0.0, 0.0, float(k)),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        pixel_spacing=(1.0, 1.0),
        rows=4,
        columns=4,
    )
    values.update(changes)
    return SliceGeometry(**values)


@pytest.mark.parametrize(
    ("slices", "reason"),
    [
        ([_slice(0)], "fewer than 2"),
        ([_slice(0), _slice(1, orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))], "orientation"),
        ([_slice(0), _slice(1, rows=5)], "size"),
        ([_slice(0), _slice(1, pixel_spacing=(1.0, 2.0))], "spacing"),
        ([_slice(0), _slice(1), _slice(1, sop_instance_uid="x")], "duplicated"),
        ([_slice(0, frame_of_reference_uid="1"), _slice(1, frame_of_reference_uid="2")], "frame"),
    ],
)
def test_not_a_volume(slices, reason) -> None:
    with pytest.raises(NotAVolume, match=reason):
        build_volume_geometry(slices)


def test_load_volume_rejects_wrong_frames() -> None:
    g = build_volume_geometry([_slice(0), _slice(1)])
    with pytest.raises(NotAVolume):
        load_volume(g, [np.zeros((4, 4))])
    with pytest.raises(NotAVolume):
        load_volume(g, [np.zeros((4, 4)), np.zeros((5, 4))])


def _small_volume(n_bytes_slices: int) -> Volume:
    g = build_volume_geometry([_slice(k) for k in range(n_bytes_slices)])
    return load_volume(g, [np.zeros((4, 4), np.uint16)] * n_bytes_slices)


def test_cache_eviction_by_size() -> None:
    one = _small_volume(2)  # 2 * 16 * 4 = 128 bytes
    cache = VolumeCache(max_bytes=3 * one.nbytes)
    for name in "abc":
        assert cache.put(cache.key(name, "v1"), _small_volume(2))
    assert cache.memory_used == 3 * one.nbytes
    assert cache.get(cache.key("a", "v1")) is not None  # a is now most recent
    cache.put(cache.key("d", "v1"), _small_volume(2))
    assert cache.key("b", "v1") not in cache
    assert cache.key("a", "v1") in cache
    assert len(cache) == 3 and cache.memory_used <= cache.max_bytes
    # a volume larger than the whole cache is not kept
    assert not cache.put(cache.key("big", "v1"), _small_volume(8))
    assert cache.key("big", "v1") not in cache
    # a new version is a different key; invalidation drops every version
    cache.put(cache.key("a", "v2"), _small_volume(2))
    assert cache.invalidate_series("a") == 2
    assert cache.stats()["items"] == len(cache)


def test_cache_get_or_load_thread_safe() -> None:
    cache = VolumeCache(max_bytes=10_000)
    calls = []

    def loader() -> Volume:
        calls.append(1)
        return _small_volume(2)

    def worker() -> None:
        for k in range(50):
            cache.get_or_load(cache.key(str(k % 7), "v"), loader)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.memory_used == sum(v.nbytes for v in cache._items.values())
    assert cache.memory_used <= cache.max_bytes


@pytest.mark.parametrize(("plane", "normal"), [("axial", None), ("sagittal", None),
                                               ("coronal", None), ("oblique", (1, 2, 3)),
                                               ("oblique", (0.3, -1, 0.2))])
def test_plane_pass_equals_point_by_point_sampling(plane: str, normal) -> None:
    """The one-pass plane sampler of regular boxes (affine_transform, per-row inside
    intervals) gives the point-by-point trilinear values, NaN pattern included, on an
    oblique acquisition (a rotated stack)."""
    rot = _rotation((1, 2, 0.5), 25)
    row_dir, col_dir = rot[:, 0], rot[:, 1]
    positions = [np.array([-20.0, -40.0, 10.0]) + k * 1.5 * rot[:, 2] for k in range(30)]
    slices, frames = _stack(row_dir, col_dir, positions, size=48)
    vol = load_volume(build_volume_geometry(slices), frames)
    assert vol.geometry.is_regular_box
    result = reformat(vol, plane, normal=normal, point=CENTER, spacing=0.7)
    rows, cols = result.values.shape
    points = (np.asarray(result.origin)
              + (np.arange(cols) * result.pixel_spacing[1])[None, :, None]
              * np.asarray(result.row_direction)
              + (np.arange(rows) * result.pixel_spacing[0])[:, None, None]
              * np.asarray(result.column_direction))
    expected = sample(vol, points.reshape(-1, 3)).reshape(rows, cols)
    assert np.isnan(expected).any() and (~np.isnan(expected)).sum() > 100
    mismatch = np.isnan(expected) != np.isnan(result.values)
    assert mismatch.mean() < 2e-3  # a pixel exactly on a half-voxel border may round apart
    both = ~np.isnan(expected) & ~np.isnan(result.values)
    np.testing.assert_allclose(result.values[both], expected[both], atol=1e-5)
