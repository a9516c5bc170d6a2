"""Rendered/thumbnail resources, volume geometry and MPR over HTTP (dicomweb.pixels.routes)."""

from __future__ import annotations

import time
from io import BytesIO

import numpy as np
import pytest
import requests
from factory import image, new_uid
from PIL import Image

SPHERE_RADIUS = 9.0


def get(url: str, accept: str | None = None) -> requests.Response:
    return requests.get(url, headers={"Accept": accept} if accept else {}, timeout=60)


def picture(response: requests.Response, fmt: str) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"image/{fmt}"
    img = Image.open(BytesIO(response.content))
    assert img.format.lower() == fmt
    return np.asarray(img)


def instance_url(server, ds) -> str:
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def series_url(server, ds) -> str:
    return f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


def stow(server, *datasets) -> None:
    response = server.stow(*datasets)
    assert response.status_code == 200, response.text


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of the server's code."""
    x = np.asarray(x, dtype=np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0, y)
    y = np.where(x > center - 0.5 + (width - 1) / 2, 255.0, y)
    return np.rint(y).astype(np.uint8)


def ct_image(rows: int = 32, columns: int = 48, **kwargs) -> tuple:
    """A smooth 12-bit CT image (stored = HU + 1024) spanning about -200..300 HU."""
    y, x = np.mgrid[0:rows, 0:columns]
    stored = (824 + x * 10 + y * 3).astype(np.uint16)
    ds = image(rows=rows, columns=columns, **kwargs)
    ds.PixelData = stored.tobytes()
    return ds, stored.astype(np.float64) - 1024.0


@pytest.fixture(scope="module")
def ct(server):
    ds, hu = ct_image()
    stow(server, ds)
    return ds, hu


def test_rendered_png_and_jpeg_match_the_window(server, ct):
    ds, hu = ct
    expected = linear_window(hu, 40, 400)
    png = picture(get(instance_url(server, ds) + "/rendered", "image/png"), "png")
    assert png.shape == hu.shape and png.dtype == np.uint8
    assert np.array_equal(png, expected)
    jpeg = picture(get(instance_url(server, ds) + "/rendered"), "jpeg").astype(float)
    assert np.abs(jpeg - expected).mean() < 2.0 and np.abs(jpeg - expected).max() < 24
    narrow = picture(get(instance_url(server, ds) + "/rendered?window=100,50&accept=image/png"),
                     "png")
    assert np.array_equal(narrow, linear_window(hu, 100, 50))
    sigmoid = picture(get(instance_url(server, ds) + "/rendered?window=50,200,sigmoid",
                          "image/png"), "png")
    expected_sigmoid = np.rint(255.0 / (1 + np.exp(-4 * (hu - 50) / 200)))
    assert np.abs(sigmoid - expected_sigmoid).max() <= 1
    gif = picture(get(instance_url(server, ds) + "/rendered", "image/gif"), "gif")
    assert gif.shape == hu.shape


def test_rendered_on_the_event_loop_is_the_image_a_thread_renders(server):
    """A located instance's next image (another window: a viewer scrolling) is rendered on
    the event loop (pixels.rendered.renders_inline); the first one, in a thread. Both paths
    give the same JPEG for the same pixels and window, MONOCHROME1 inverted alike."""
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        study, series = new_uid(), new_uid()
        twins = [ct_image(study=study, series=series, instance_number=n)[0] for n in (1, 2)]
        for ds in twins:
            ds.PhotometricInterpretation = photometric
        twins[1].PixelData = twins[0].PixelData
        stow(server, *twins)
        threaded = get(instance_url(server, twins[0]) + "/rendered?window=30,300").content
        get(instance_url(server, twins[1]) + "/rendered?window=0,100")  # now located
        inline = get(instance_url(server, twins[1]) + "/rendered?window=30,300").content
        assert inline == threaded and inline.startswith(b"\xff\xd8")


def test_rendered_frame_level_and_sixteen_bit_png(server, ct):
    ds, hu = ct
    frame = picture(get(instance_url(server, ds) + "/frames/1/rendered", "image/png"), "png")
    assert np.array_equal(frame, linear_window(hu, 40, 400))
    deep = get(instance_url(server, ds) + "/rendered?bitdepth=16&window=40,400", "image/png")
    img = Image.open(BytesIO(deep.content))
    assert img.mode.startswith("I")
    values = np.asarray(img).astype(np.float64)
    assert np.abs(values / 257.0 - linear_window(hu, 40, 400)).max() <= 1.0


def test_monochrome1_is_inverted(server):
    ds, hu = ct_image(rows=16, columns=24)
    ds.PhotometricInterpretation = "MONOCHROME1"
    stow(server, ds)
    png = picture(get(instance_url(server, ds) + "/rendered", "image/png"), "png")
    assert np.array_equal(png, 255 - linear_window(hu, 40, 400))


def test_rgb_rendered_as_stored(server):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(30) * 8
    rgb[..., 1] = (np.arange(20) * 12)[:, None]
    rgb[..., 2] = 77
    ds = image(rows=20, columns=30)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    ds.PixelData = rgb.tobytes()
    stow(server, ds)
    png = picture(get(instance_url(server, ds) + "/rendered", "image/png"), "png")
    assert np.array_equal(png, rgb)


def test_multiframe_frame_choice_and_viewport(server):
    frames = np.stack([np.full((16, 32), 1024 + v, np.uint16) for v in (-100, 0, 100)])
    ds = image(rows=16, columns=32, frames=3)
    ds.PixelData = frames.tobytes()
    stow(server, ds)
    url = instance_url(server, ds)
    for number, hu in ((1, -100), (2, 0), (3, 100)):
        png = picture(get(f"{url}/frames/{number}/rendered", "image/png"), "png")
        assert np.all(png == linear_window(np.array([hu]), 40, 400)[0])
    first = picture(get(f"{url}/frames/3,1/rendered", "image/png"), "png")
    assert np.all(first == linear_window(np.array([100]), 40, 400)[0])
    small = picture(get(f"{url}/rendered?viewport=8,8", "image/png"), "png")
    assert small.shape == (4, 8)
    cropped = picture(get(f"{url}/rendered?viewport=64,64,0,0,16,16", "image/png"), "png")
    assert cropped.shape == (64, 64)
    assert get(f"{url}/frames/4/rendered").status_code == 404


def test_rendered_errors(server, ct):
    ds, _ = ct
    url = instance_url(server, ds) + "/rendered"
    assert get(url, "image/tiff").status_code == 406
    assert get(url + "?accept=image/tiff").status_code == 406
    for query, parameter in (("window=abc", "window"), ("window=40", "window"),
                             ("window=40,400,cubic", "window"), ("window=40,0", "window"),
                             ("viewport=0,10", "viewport"), ("viewport=a,b", "viewport"),
                             ("quality=0", "quality"), ("quality=x", "quality"),
                             ("bitdepth=12", "bitdepth")):
        response = get(f"{url}?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["parameter"] == parameter
        assert parameter in response.json()["error"]["message"]
    assert get(f"{server.url}/studies/{new_uid()}/rendered").status_code == 404


def test_thumbnails_and_representative_images(server):
    study = new_uid()
    first, second = new_uid(), new_uid()
    series_one = []
    for number, hu in enumerate((-150, 0, 150), start=1):
        ds = image(study=study, series=first, instance_number=number, rows=200, columns=300,
                   position_z=float(number))
        ds.PixelData = np.full((200, 300), 1024 + hu, np.uint16).tobytes()
        series_one.append(ds)
    other = image(study=study, series=second, series_number=2, rows=20, columns=20)
    stow(server, *series_one, other)
    middle = linear_window(np.array([0.0]), 40, 400)[0]
    study_png = picture(get(f"{server.url}/studies/{study}/rendered", "image/png"), "png")
    assert study_png.shape == (200, 300) and np.all(study_png == middle)
    series_png = picture(get(series_url(server, series_one[0]) + "/rendered?accept=image/png"),
                         "png")
    assert np.all(series_png == middle)
    for url in (f"{server.url}/studies/{study}", series_url(server, series_one[0]),
                instance_url(server, series_one[2]),
                instance_url(server, series_one[2]) + "/frames/1"):
        thumb = picture(get(url + "/thumbnail"), "jpeg")
        assert thumb.shape == (85, 128)
    png_thumb = picture(get(f"{server.url}/studies/{study}/thumbnail?viewport=64,64",
                            "image/png"), "png")
    assert png_thumb.shape == (43, 64) and np.all(png_thumb == middle)
    tiny = picture(get(instance_url(server, other) + "/thumbnail"), "jpeg")
    assert tiny.shape == (20, 20)  # never enlarged
    assert get(f"{server.url}/studies/{study}/thumbnail", "image/tiff").status_code == 406


# --- volumes and MPR ---------------------------------------------------------------------


def rotation(ax: float, az: float) -> np.ndarray:
    """Rotation about x by ax then about z by az (degrees)."""
    a, b = np.radians(ax), np.radians(az)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def sphere_series(centre, *, rotate: np.ndarray | None = None, size: int = 48, slices: int = 40,
                  spacing: float = 1.0, gap: float = 1.0) -> list:
    """Slices of a volume centred on `centre` (LPS mm) holding a bright sphere (1000 HU in
    -500 HU) of SPHERE_RADIUS; uploaded in reverse order to exercise sorting."""
    rot = np.eye(3) if rotate is None else rotate
    row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    centre = np.asarray(centre, dtype=np.float64)
    study, series = new_uid(), new_uid()
    j, i = np.meshgrid(np.arange(size), np.arange(size))  # j: column index, i: row index
    out = []
    for k in range(slices):
        origin = (centre - row_dir * spacing * (size - 1) / 2 - col_dir * spacing * (size - 1) / 2
                  + normal * gap * (k - (slices - 1) / 2))
        points = (origin + j[..., None] * spacing * row_dir + i[..., None] * spacing * col_dir)
        inside = np.linalg.norm(points - centre, axis=-1) <= SPHERE_RADIUS
        stored = np.where(inside, 2024, 524).astype(np.uint16)
        ds = image(study=study, series=series, instance_number=k + 1, rows=size, columns=size,
                   modality="MR")
        ds.ImagePositionPatient = [round(float(v), 6) for v in origin]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [spacing, spacing]
        ds.WindowCenter, ds.WindowWidth = 250, 1500
        ds.PixelData = stored.tobytes()
        out.append(ds)
    return out[::-1]


def vector(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split(",")])


def plane(server, series, path: str) -> tuple[np.ndarray, dict]:
    response = get(series_url(server, series[0]) + "/mpr/" + path, "application/octet-stream")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    rows, cols = (int(v) for v in response.headers["x-plane-size"].split(","))
    values = np.frombuffer(response.content, "<f4").reshape(rows, cols)
    return values, response.headers


def check_disc(values: np.ndarray, headers, centre, normal) -> None:
    """The bright pixels form the sphere's cross-section: centred on the projection of
    the centre, with radius sqrt(R^2 - d^2) (d: distance of the plane from the centre)."""
    origin = vector(headers["x-plane-origin"])
    row_dir = vector(headers["x-plane-row-direction"])
    col_dir = vector(headers["x-plane-column-direction"])
    row_spacing, col_spacing = vector(headers["x-plane-pixel-spacing"])
    assert np.allclose(vector(headers["x-plane-normal"]), normal / np.linalg.norm(normal))
    r, c = np.nonzero(values > 250.0)  # half way between -500 and 1000
    assert r.size, "sphere not found"
    points = (origin + c[:, None] * col_spacing * row_dir + r[:, None] * row_spacing * col_dir)
    n = normal / np.linalg.norm(normal)
    d = float((origin - np.asarray(centre)) @ n)
    projected = np.asarray(centre) + d * n
    assert np.linalg.norm(points.mean(axis=0) - projected) < 0.5
    radius = np.sqrt(r.size * row_spacing * col_spacing / np.pi)
    assert abs(radius - np.sqrt(SPHERE_RADIUS**2 - d**2)) < 0.6, radius


@pytest.mark.parametrize("oblique_acquisition", [False, True])
def test_mpr_finds_the_sphere(server, oblique_acquisition):
    centre = (12.0, -7.5, 30.0)
    rotate = rotation(20, 15) if oblique_acquisition else None
    series = sphere_series(centre, rotate=rotate)
    stow(server, *series)
    cx, cy, cz = centre
    cases = [
        (f"axial?position={cz}", (0, 0, 1)),
        (f"axial?position={cz + 4}", (0, 0, 1)),
        (f"sagittal?position={cx}", (1, 0, 0)),
        (f"coronal?position={cy - 3}", (0, 1, 0)),
        (f"oblique?normal=1,1,1&point={cx},{cy},{cz}", (1, 1, 1)),
        (f"oblique?normal=0,-2,1&point={cx},{cy},{cz + 2}&spacing=0.75", (0, -2, 1)),
    ]
    for path, normal in cases:
        values, headers = plane(server, series, path)
        check_disc(values, headers, centre, np.asarray(normal, dtype=float))
    body = get(series_url(server, series[0]) + f"/mpr/oblique?normal=1,1,1&point={cx},{cy},{cz}",
               "application/json").json()
    assert len(body["values"]) == body["size"][0] and len(body["values"][0]) == body["size"][1]
    assert None in body["values"][0]  # outside the volume: NaN, written as null
    assert np.allclose(body["normal"], np.ones(3) / np.sqrt(3))
    png = picture(get(series_url(server, series[0]) + f"/mpr/coronal?position={cy}"), "png")
    assert png.dtype == np.uint8 and png.max() == 255
    jpeg = get(series_url(server, series[0]) + f"/mpr/sagittal?position={cx}&viewport=32,32",
               "image/jpeg")
    assert max(picture(jpeg, "jpeg").shape) == 32
    assert jpeg.headers["x-frame-of-reference-uid"] == series[0].FrameOfReferenceUID


def test_volume_geometry(server):
    series = sphere_series((5.0, 6.0, 7.0), size=16, slices=6, spacing=0.8, gap=2.5)
    stow(server, *series)
    body = get(series_url(server, series[0]) + "/volume").json()
    assert body["size"] == [16, 16, 6]
    assert np.allclose(body["spacing"], [0.8, 0.8, 2.5])
    by_instance = {ds.SOPInstanceUID: ds.ImagePositionPatient for ds in series}
    expected_order = sorted(by_instance, key=lambda uid: float(by_instance[uid][2]))
    assert body["instance_order"] == expected_order
    assert np.allclose(body["origin"], [float(v) for v in by_instance[expected_order[0]]])
    assert np.allclose(body["direction"], np.eye(3))
    assert body["evenly_spaced"] is True and body["sheared"] is False
    assert np.allclose(np.diff(body["slice_positions"]), 2.5)
    assert body["frame_of_reference_uid"] == series[0].FrameOfReferenceUID
    assert body["window"]["center"] == 250 and body["window"]["width"] == 1500
    assert {"bytes", "max_bytes", "items", "loaded"} <= set(body["cache"])


def test_not_a_volume_and_bad_requests(server):
    study, series = new_uid(), new_uid()
    mixed = [image(study=study, series=series, instance_number=1, rows=16, columns=16),
             image(study=study, series=series, instance_number=2, rows=32, columns=32,
                   position_z=1.0)]
    stow(server, *mixed)
    for path in ("/volume", "/mpr/axial"):
        response = get(series_url(server, mixed[0]) + path)
        assert response.status_code == 422, response.text
        assert "different sizes" in response.json()["error"]["message"]
    single = image(rows=16, columns=16)
    stow(server, single)
    assert get(series_url(server, single) + "/volume").status_code == 422
    good = sphere_series((0.0, 0.0, 0.0), size=16, slices=4)
    stow(server, *good)
    url = series_url(server, good[0]) + "/mpr/"
    for path, parameter in (("oblique", "normal"), ("axial?normal=0,0,1", "normal"),
                            ("oblique?normal=0,0,0", "normal"), ("axial?position=x", "position"),
                            ("axial?index=1.5", "index"), ("axial?index=1&position=2", "index"),
                            ("axial?spacing=-1", "spacing"), ("axial?window=1", "window"),
                            ("oblique?normal=1,1", "normal")):
        response = get(url + path)
        assert response.status_code == 400, path
        assert response.json()["error"]["parameter"] == parameter
    assert get(url + "axial?index=99").status_code == 400
    assert get(url + "diagonal").status_code == 404
    assert get(url + "axial", "image/tiff").status_code == 406


def test_volume_cache_hit_and_invalidation(server):
    series = sphere_series((0.0, 0.0, 0.0), size=64, slices=48)
    stow(server, *series[1:])
    url = series_url(server, series[0])
    start = time.perf_counter()
    first = get(url + "/mpr/sagittal", "application/octet-stream")
    first_time = time.perf_counter() - start
    start = time.perf_counter()
    second = get(url + "/mpr/coronal", "application/octet-stream")
    second_time = time.perf_counter() - start
    assert first.headers["x-volume-cache"] == "miss"
    assert second.headers["x-volume-cache"] == "hit"
    assert second_time < first_time * 1.5 + 0.05
    body = get(url + "/volume").json()
    assert body["cache"]["loaded"] and body["cache"]["bytes"] >= 64 * 64 * 47 * 4
    assert body["size"][2] == 47
    stow(server, series[0])  # a new slice: a new version of the series
    third = get(url + "/mpr/coronal", "application/octet-stream")
    assert third.headers["x-volume-cache"] == "miss"
    assert get(url + "/volume").json()["size"][2] == 48
    instance = instance_url(server, series[0])
    assert requests.delete(instance, timeout=30).status_code == 200
    assert get(url + "/mpr/coronal", "application/octet-stream").headers["x-volume-cache"] == "miss"
