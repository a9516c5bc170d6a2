"""Shared by the access tests: a server with authentication on (OpenID provider, labels) on
conftest's `own_database` (API keys there must not close the session's open server), and a
small world of
studies with labels A, B and none, RT objects among them.

World (labels from the writer's token):
- study A (label A): the generator's RT study (CT, MR, RTSTRUCT, RTPLAN, RTDOSE, REG);
- study B (label B): another RT study (other seed, other UIDs);
- study C (label B): A's RTDOSE and RTSTRUCT copied into another study (same Frame of
  Reference as A's CT): "objects from another study" for overlays, DVHs, masks;
- study U (no label): one CT image stored by an admin.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import factory
import pytest
import requests
from conftest import Server, start_server, stop_server
from factory import with_meta
from oidc import OidcProvider
from pydicom.dataset import Dataset

from conformance import generate as gen
from dicomweb.config import Settings
from dicomweb.viewer import is_fetched

SEED_A, SEED_B = 8101, 8102


def oidc_args(provider: OidcProvider) -> list[str]:
    return ["--oidc-issuer", provider.issuer, "--oidc-audience", provider.audience]


#: Credentials are checked against the database on every request in tests (no cache delay).
NO_CACHE = {"DICOMWEB_CREDENTIAL_CACHE_SECONDS": "0"}


def start_auth_server(folder: Path, database: str | None, provider: OidcProvider,
                      *more: str, env: dict[str, str] | None = None) -> Server:
    return start_server(folder, database, extra=[*oidc_args(provider), *more],
                        env={**NO_CACHE, **(env or {})})


VIEWER_DIR = os.environ.get("DICOMWEB_TEST_VIEWER_DIR") or os.environ.get("DICOMWEB_VIEWER_DIR")


def viewer_settings() -> Settings:
    return Settings(viewer=True, viewer_dir=Path(VIEWER_DIR) if VIEWER_DIR else None)


def viewer_args() -> list[str]:
    """Serve the viewer too when it is fetched (its routes are part of the route table)."""
    if not is_fetched(viewer_settings()):
        return []
    return ["--viewer", *(["--viewer-dir", VIEWER_DIR] if VIEWER_DIR else [])]


def auth_settings(provider: OidcProvider, **more: object) -> Settings:
    """The settings of `auth_server`, for building its route table in-process."""
    base = viewer_settings() if viewer_args() else Settings()
    return replace(base, oidc_issuer=provider.issuer, oidc_audience=provider.audience,
                   study_access="labels", **more)


@pytest.fixture(scope="module")
def auth_server(own_database: str | None, oidc_provider: OidcProvider,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_auth_server(tmp_path_factory.mktemp("auth"), own_database, oidc_provider,
                               "--study-access", "labels", *viewer_args())
    yield server
    stop_server(server)


class Caller:
    """Requests with one client's real access token."""

    def __init__(self, provider: OidcProvider, client_id: str) -> None:
        self.token = provider.token(client_id)
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def get(self, url: str, **kwargs: object) -> requests.Response:
        return requests.get(url, headers=self.headers, timeout=60, **kwargs)

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return requests.request(method, url, headers=headers, timeout=60, **kwargs)

    def stow(self, server: Server, datasets: list[Dataset]) -> requests.Response:
        body, content_type = factory.multipart([factory.to_bytes(with_meta(ds))
                                                for ds in datasets])
        return requests.post(f"{server.url}/studies", data=body, timeout=120,
                             headers={**self.headers, "Content-Type": content_type})


def stow_all(caller: Caller, server: Server, datasets: list[Dataset]) -> None:
    for start in range(0, len(datasets), 20):
        response = caller.stow(server, datasets[start:start + 20])
        assert response.status_code == 200, response.text


def moved(ds: Dataset, study: str, series: str) -> Dataset:
    """The object as if stored in another study (new study, series and SOP Instance UIDs)."""
    out = copy.deepcopy(ds)
    out.StudyInstanceUID, out.SeriesInstanceUID = study, series
    out.SOPInstanceUID = factory.new_uid()
    return out


@dataclass
class StudyUids:
    study: str
    series: dict[str, str]
    sops: dict[str, str]  # role → one SOP Instance UID (ct, mr: the first slice)


def rt_objects(rt: gen.RtStudy) -> list[Dataset]:
    return [*gen.ct_series_datasets(rt), *gen.mr_series_datasets(rt), gen.rtstruct_dataset(rt),
            gen.rtplan_dataset(rt), gen.rtdose_dataset(rt), gen.reg_dataset(rt)]


def uids_of(rt: gen.RtStudy) -> StudyUids:
    truth = gen.ground_truth(rt)
    sops = {role: (v[0] if isinstance(v, list) else v)
            for role, v in truth["sop_instance_uids"].items()}
    return StudyUids(truth["study_instance_uid"], dict(truth["series_instance_uids"]), sops)


@dataclass
class World:
    a: StudyUids
    b: StudyUids
    c: StudyUids
    u: StudyUids


@pytest.fixture(scope="module")
def world(auth_server: Server, oidc_provider: OidcProvider) -> World:
    writer_a, writer_b = Caller(oidc_provider, "writer-a"), Caller(oidc_provider, "writer-b")
    admin = Caller(oidc_provider, "admin")
    rt_a = gen.RtStudy(seed=SEED_A, ct_slices=6, mr_slices=6)
    rt_b = gen.RtStudy(seed=SEED_B, ct_slices=6, mr_slices=6)
    stow_all(writer_a, auth_server, rt_objects(rt_a))
    stow_all(writer_b, auth_server, rt_objects(rt_b))
    c_study = factory.new_uid()
    c_series = {"rtdose": factory.new_uid(), "rtstruct": factory.new_uid()}
    dose = moved(gen.rtdose_dataset(rt_a), c_study, c_series["rtdose"])
    structures = moved(gen.rtstruct_dataset(rt_a), c_study, c_series["rtstruct"])
    stow_all(writer_b, auth_server, [dose, structures])
    u_study, u_series = factory.new_uid(), factory.new_uid()
    image = factory.image(study=u_study, series=u_series)
    stow_all(admin, auth_server, [image])
    return World(
        a=uids_of(rt_a), b=uids_of(rt_b),
        c=StudyUids(c_study, c_series, {"rtdose": dose.SOPInstanceUID,
                                        "rtstruct": structures.SOPInstanceUID}),
        u=StudyUids(u_study, {"ct": u_series}, {"ct": image.SOPInstanceUID}),
    )


# --- the route table ----------------------------------------------------------------------
def route_table(settings: Settings, folder: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app these settings build."""
    from starlette.routing import Mount, Route

    from dicomweb.app import create_app

    app = create_app(replace(settings, data_dir=folder))
    found: list[tuple[str, str]] = []

    def walk(routes: list, prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                for method in sorted(route.methods or {"GET"}):
                    found.append((method, prefix + route.path))

    walk(app.routes, "")
    app.state.store.close()
    return found


def role_of(template: str) -> str:
    """Which object of a study a route template is about."""
    for marker, role in (("/rt/rois", "rtstruct"), ("/rt/dose", "rtdose"),
                         ("/rt/registration", "reg"), ("/rt/plan", "rtplan")):
        if marker in template:
            return role
    return "ct"


PARAMETER_VALUES = {"frames": "1", "path": "7FE00010", "number": "1", "plane": "axial",
                    "label": "A"}


def uids_for(template: str, uids: StudyUids | None = None) -> dict[str, str]:
    """Path parameter values: real UIDs of `uids` (the object the route is about), or new,
    unknown ones if None."""
    role = role_of(template)
    if uids is None:
        return {"study": factory.new_uid(), "series": factory.new_uid(),
                "instance": factory.new_uid()}
    return {"study": uids.study, "series": uids.series[role], "instance": uids.sops[role]}


def concrete(template: str, uids: StudyUids | dict[str, str] | None = None) -> str:
    """The template filled in (see uids_for)."""
    values = {**PARAMETER_VALUES, "share": uuid.uuid4().hex,
              **(uids if isinstance(uids, dict) else uids_for(template, uids))}
    path = template.replace("{path:path}", "{path}")
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path
