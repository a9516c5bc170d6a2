"""Per-study access by labels (`--study-access labels`), on SQLite and PostgreSQL: the store
filters searches inside its queries (rows, pages, Warning, counts), a study the caller may not
see answers every route exactly like an unknown UID, requests combining objects check every
study they touch, STOW labels what it stores, and admins manage labels."""

from __future__ import annotations

import access_setup
import factory
import pytest
import requests
from access_setup import Caller, auth_settings, concrete, route_table, uids_for

auth_server = access_setup.auth_server  # fixture
world = access_setup.world

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
RELATED_SERIES, RELATED_INSTANCES = "00201206", "00201208"
MODALITIES_IN_STUDY = "00080061"
FAILED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081197"


@pytest.fixture(scope="module")
def callers(oidc_provider) -> dict[str, Caller]:
    names = ("reader-a", "reader-b", "reader-ab", "reader-nolabels", "writer-a", "deleter-a",
             "admin")
    return {name: Caller(oidc_provider, name) for name in names}


@pytest.fixture(scope="module")
def table(oidc_provider, tmp_path_factory) -> list[tuple[str, str]]:
    return route_table(auth_settings(oidc_provider), tmp_path_factory.mktemp("table"))


def studies_seen(caller: Caller, url: str, **params: str) -> list[str]:
    response = caller.get(f"{url}/studies", params=params)
    assert response.status_code in (200, 204), response.text
    rows = response.json() if response.status_code == 200 else []
    return [row[STUDY_UID]["Value"][0] for row in rows]


def test_stored_studies_get_the_writers_labels(auth_server, world, callers) -> None:
    admin = callers["admin"]
    expected = {world.a.study: ["A"], world.b.study: ["B"], world.c.study: ["B"],
                world.u.study: []}
    for study, labels in expected.items():
        response = admin.get(f"{auth_server.url}/studies/{study}/labels")
        assert response.status_code == 200, response.text
        assert response.json() == {"study": study, "labels": labels}


def test_searches_see_only_the_callers_studies(auth_server, world, callers) -> None:
    url = auth_server.url
    mine = {world.a.study, world.b.study, world.c.study, world.u.study}
    assert set(studies_seen(callers["reader-a"], url)) & mine == {world.a.study}
    assert set(studies_seen(callers["reader-b"], url)) & mine == {world.b.study, world.c.study}
    assert set(studies_seen(callers["reader-ab"], url)) & mine == mine - {world.u.study}
    assert studies_seen(callers["reader-nolabels"], url) == []
    assert set(studies_seen(callers["admin"], url)) >= mine
    # Matching on a hidden study's UID finds nothing, exactly as for an unknown UID.
    reader_a = callers["reader-a"]
    assert studies_seen(reader_a, url, StudyInstanceUID=world.b.study) == []
    for level in ("series", "instances"):
        response = reader_a.get(f"{url}/{level}", params={"StudyInstanceUID": world.b.study})
        assert response.status_code == 204
        response = reader_a.get(f"{url}/studies/{world.b.study}/{level}")
        assert response.status_code == 204
        rows = reader_a.get(f"{url}/{level}").json()
        assert {row[STUDY_UID]["Value"][0] for row in rows} & mine == {world.a.study}
    # ModalitiesInStudy: C holds an RTDOSE too, but reader-a sees only A's.
    assert studies_seen(reader_a, url, ModalitiesInStudy="RTDOSE") == [world.a.study]


def test_pages_and_counts_cover_only_visible_studies(auth_server, world, callers) -> None:
    url, reader = auth_server.url, callers["reader-ab"]
    seen, offset, warnings = [], 0, []
    while True:
        response = reader.get(f"{url}/studies", params={"limit": "1", "offset": str(offset)})
        if response.status_code == 204:
            break
        seen += [row[STUDY_UID]["Value"][0] for row in response.json()]
        warnings.append("Warning" in response.headers)
        offset += 1
    assert sorted(seen) == sorted({world.a.study, world.b.study, world.c.study})
    assert warnings == [True, True, False]  # the last visible page says nothing is left
    rows = {r[STUDY_UID]["Value"][0]: r for r in reader.get(f"{url}/studies").json()}
    admin_rows = {r[STUDY_UID]["Value"][0]: r for r in callers["admin"].get(
        f"{url}/studies").json()}
    for study in seen:
        for tag in (RELATED_SERIES, RELATED_INSTANCES, MODALITIES_IN_STUDY):
            assert rows[study][tag] == admin_rows[study][tag]


def caller_for(method: str, template: str, callers: dict[str, Caller]) -> Caller:
    if method == "DELETE":
        return callers["deleter-a"]
    return callers["reader-a"]


def shape(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(value, f"<{name}>")
    return text


def test_a_hidden_study_answers_every_route_like_an_unknown_one(auth_server, world, callers,
                                                                 table) -> None:
    """reader-a (label A) on study B, on every route that names a study, versus unknown UIDs:
    the same status and the same body. reader-b gets what an admin gets."""
    checked = 0
    for method, template in table:
        if "{study}" not in template or "/labels" in template or method == "POST" \
                and template.endswith("{study}"):
            continue  # labels are admin routes; STOW has its own test below
        caller = caller_for(method, template, callers)
        hidden_values = uids_for(template, world.b)
        unknown_values = uids_for(template, None)
        hidden = caller.request(method, auth_server.origin + concrete(template, hidden_values))
        unknown = caller.request(method, auth_server.origin + concrete(template, unknown_values))
        assert hidden.status_code == unknown.status_code, (method, template, hidden.text)
        assert hidden.status_code in (404, 204), (method, template, hidden.status_code)
        assert shape(hidden.text, hidden_values) == shape(unknown.text, unknown_values), template
        checked += 1
        if method in ("GET", "HEAD"):
            url = auth_server.origin + concrete(template, hidden_values)
            owner, admin = callers["reader-b"].request(method, url), callers["admin"].request(
                method, url)
            assert owner.status_code == admin.status_code, (template, owner.text, admin.text)
    assert checked >= 35
    # The DELETEs above removed nothing.
    assert callers["admin"].get(f"{auth_server.url}/studies/{world.b.study}/metadata").ok


def test_a_caller_without_labels_sees_no_study(auth_server, world, callers) -> None:
    nobody = callers["reader-nolabels"]
    assert nobody.get(f"{auth_server.url}/studies/{world.a.study}/metadata").status_code == 404
    assert nobody.get(f"{auth_server.url}/studies/{world.u.study}/metadata").status_code == 404


def ct_url(server, uids) -> str:
    return (f"{server.url}/studies/{uids.study}/series/{uids.series['ct']}/instances/"
            f"{uids.sops['ct']}")


def test_combined_objects_need_every_study(auth_server, world, callers) -> None:
    """A's CT with C's dose or structures (C is labelled B); B's series fused; a DVH and a
    mask with objects from another study: refused (404, like unknown UIDs) unless the caller
    sees both studies."""
    a_ct = ct_url(auth_server, world.a)
    a_dose = (f"{auth_server.url}/studies/{world.a.study}/series/{world.a.series['rtdose']}"
              f"/instances/{world.a.sops['rtdose']}")
    a_rois = (f"{auth_server.url}/studies/{world.a.study}/series/{world.a.series['rtstruct']}"
              f"/instances/{world.a.sops['rtstruct']}")
    requests_ = [
        (f"{a_ct}/rendered", {"dose": world.c.sops["rtdose"]}, "dose"),
        (f"{a_ct}/rendered", {"structures": world.c.sops["rtstruct"]}, "structures"),
        (f"{a_ct}/rendered", {"fuse": world.b.series["ct"]}, "fuse"),
        (f"{a_dose}/rt/dose/dvh", {"structures": world.c.sops["rtstruct"], "roi": "1"},
         "structures"),
        # Target series must be of the same study (RT's rule): still 404 for everyone, but
        # reader-a's answer does not tell that B's series exists.
        (f"{a_rois}/rt/rois/1/mask", {"series": world.b.series["ct"]}, "series"),
        (f"{a_dose}/rt/dose/values", {"series": world.b.series["ct"]}, "series"),
    ]
    same_study_only = {"series"}
    for url, params, name in requests_:
        refused = callers["reader-a"].get(url, params=params)
        assert refused.status_code == 404, (url, params, refused.text)
        assert refused.json()["error"]["parameter"] == name
        unknown = callers["reader-a"].get(url, params={**params, name: factory.new_uid()})
        assert shape(refused.text, {"uid": params[name]}) == shape(
            unknown.text, {"uid": unknown.request.url.split(f"{name}=")[1].split("&")[0]})
        both, admin = callers["reader-ab"].get(url, params=params), callers["admin"].get(
            url, params=params)
        assert both.status_code == admin.status_code, (url, params, both.text)
        assert name in same_study_only or both.status_code != 404, (url, params, both.text)
    assert callers["reader-ab"].get(f"{a_ct}/rendered",
                                    params={"dose": world.c.sops["rtdose"]}).status_code == 200


def failure_reasons(response: requests.Response) -> list[int]:
    body = response.json()
    return [item[FAILURE_REASON]["Value"][0]
            for item in body.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])]


def test_stow_adds_only_to_studies_the_writer_may_see(auth_server, world, callers) -> None:
    writer, admin, url = callers["writer-a"], callers["admin"], auth_server.url
    into_b = factory.image(study=world.b.study, series=factory.new_uid())
    refused = writer.stow(auth_server, [into_b])
    assert refused.status_code == 409 and failure_reasons(refused) == [0x0124]
    assert admin.get(f"{url}/studies/{world.b.study}/series/{into_b.SeriesInstanceUID}"
                     "/metadata").status_code == 404
    # A study with no label yet takes the writer's instances, and its label.
    unlabelled = factory.new_uid()
    assert admin.stow(auth_server, [factory.image(study=unlabelled)]).status_code == 200
    assert callers["reader-a"].get(f"{url}/studies/{unlabelled}/metadata").status_code == 404
    assert writer.stow(auth_server, [factory.image(study=unlabelled)]).status_code == 200
    assert admin.get(f"{url}/studies/{unlabelled}/labels").json()["labels"] == ["A"]
    assert callers["reader-a"].get(f"{url}/studies/{unlabelled}/metadata").status_code == 200
    # Into its own study, with a path study too.
    into_a = factory.image(study=world.a.study, series=factory.new_uid())
    body, content_type = factory.multipart([factory.to_bytes(into_a)])
    stored = requests.post(f"{url}/studies/{world.a.study}", data=body, timeout=60,
                           headers={**writer.headers, "Content-Type": content_type})
    assert stored.status_code == 200, stored.text
    body, content_type = factory.multipart([factory.to_bytes(factory.image(study=world.b.study))])
    hidden = requests.post(f"{url}/studies/{world.b.study}", data=body, timeout=60,
                           headers={**writer.headers, "Content-Type": content_type})
    assert hidden.status_code == 409 and failure_reasons(hidden) == [0x0124]


def test_admins_manage_labels(auth_server, world, callers) -> None:
    admin, url = callers["admin"], auth_server.url
    study = factory.new_uid()
    assert admin.stow(auth_server, [factory.image(study=study)]).status_code == 200
    reader_b = callers["reader-b"]
    assert reader_b.get(f"{url}/studies/{study}/metadata").status_code == 404
    added = admin.request("PUT", f"{url}/studies/{study}/labels/B")
    assert added.status_code == 200 and added.json()["labels"] == ["B"]
    assert admin.request("PUT", f"{url}/studies/{study}/labels/B").json()["labels"] == ["B"]
    assert reader_b.get(f"{url}/studies/{study}/metadata").status_code == 200
    assert study in studies_seen(reader_b, url)
    removed = admin.request("DELETE", f"{url}/studies/{study}/labels/B")
    assert removed.status_code == 200 and removed.json()["labels"] == []
    assert reader_b.get(f"{url}/studies/{study}/metadata").status_code == 404
    assert admin.request("DELETE", f"{url}/studies/{study}/labels/B").status_code == 404
    assert admin.request("PUT", f"{url}/studies/{study}/labels/bad%20label").status_code == 400
    unknown = factory.new_uid()
    for method, suffix in (("GET", ""), ("PUT", "/B"), ("DELETE", "/B")):
        response = admin.request(method, f"{url}/studies/{unknown}/labels{suffix}")
        assert response.status_code == 404, (method, response.text)
    # Deleting a study removes its labels: a new study with the same UID starts without.
    assert admin.request("PUT", f"{url}/studies/{study}/labels/A").status_code == 200
    assert admin.request("DELETE", f"{url}/studies/{study}").status_code == 200
    assert admin.stow(auth_server, [factory.image(study=study)]).status_code == 200
    assert admin.get(f"{url}/studies/{study}/labels").json()["labels"] == []


def test_the_rt_graph_shows_no_hidden_study(auth_server, world, callers) -> None:
    """C's structure set (label B) outlines A's CT (label A): the link to A's images is in C's
    graph only for callers who see A; for the others those images are "not stored", as if
    they were unknown."""
    url = f"{auth_server.url}/studies/{world.c.study}/rt"

    def linked_series(caller: str) -> set[str]:
        graph = callers[caller].get(url).json()
        return {link["to"].get("series_instance_uid") for link in graph["links"]}

    assert world.a.series["ct"] in linked_series("admin")
    assert world.a.series["ct"] in linked_series("reader-ab")
    assert world.a.series["ct"] not in linked_series("reader-b")
    missing = callers["reader-b"].get(url).json()["missing"]
    assert any(item["reference"] == "contour_image" for item in missing)
