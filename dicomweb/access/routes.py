"""Study labels (admins) and share links, under the DICOMweb root."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb.access import ADMIN, principal_of
from dicomweb.access.apikeys import LABEL
from dicomweb.access.authenticate import AccessControl
from dicomweb.access.shares import DEFAULT_SECONDS, owner_of
from dicomweb.config import Settings
from dicomweb.errors import BadRequest, NotFound
from dicomweb.store import access as store_access
from dicomweb.urls import service_base_url

STUDY = "/studies/{study}"


def _json(body: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _access(request: Request) -> AccessControl:
    return request.app.state.access


def _label(request: Request) -> str:
    label = request.path_params["label"]
    if not LABEL.fullmatch(label):
        raise BadRequest(f"label {label!r}: letters, digits, '_', '.', ':' and '-', up to 64 "
                         "characters", parameter="label")
    return label


# --- labels -------------------------------------------------------------------------------
async def retrieve_study_labels(request: Request) -> Response:
    study = request.path_params["study"]
    labels = await run_in_threadpool(store_access.study_labels, request.app.state.store.engine,
                                     study)
    if labels is None:
        raise NotFound(f"no instance matches study {study}")
    return _json({"study": study, "labels": labels})


async def add_study_label(request: Request) -> Response:
    study, label = request.path_params["study"], _label(request)
    labels = await run_in_threadpool(store_access.add_study_label,
                                     request.app.state.store.engine, study, label)
    if labels is None:
        raise NotFound(f"no instance matches study {study}")
    return _json({"study": study, "labels": labels})


async def remove_study_label(request: Request) -> Response:
    study, label = request.path_params["study"], _label(request)
    engine = request.app.state.store.engine
    if not await run_in_threadpool(store_access.remove_study_label, engine, study, label):
        if await run_in_threadpool(store_access.study_labels, engine, study) is None:
            raise NotFound(f"no instance matches study {study}")
        raise NotFound(f"study {study} has no label {label}", parameter="label")
    labels = await run_in_threadpool(store_access.study_labels, engine, study)
    return _json({"study": study, "labels": labels or []})


# --- shares -------------------------------------------------------------------------------
def share_seconds(request: Request, settings: Settings) -> int:
    text = request.query_params.get("expires")
    if text is None:
        return min(DEFAULT_SECONDS, settings.share_max_seconds)
    try:
        seconds = int(text)
    except ValueError:
        raise BadRequest(f"expires={text!r}: must be a number of seconds",
                         parameter="expires") from None
    if seconds < 1:
        raise BadRequest("expires must be at least 1 second", parameter="expires")
    return min(seconds, settings.share_max_seconds)


def iso_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def create_share(request: Request) -> Response:
    """`POST /studies/{study}/share?expires=SECONDS`: a link that reads this study only."""
    settings: Settings = request.app.state.settings
    study = request.path_params["study"]
    seconds = share_seconds(request, settings)
    engine = request.app.state.store.engine
    if not await run_in_threadpool(store_access.visible_studies, engine,
                                   store_access.EVERY_STUDY, [study]):
        raise NotFound(f"no instance matches study {study}")
    share = await run_in_threadpool(_access(request).shares.create, study,
                                    principal_of(request), seconds)
    body: dict[str, object] = {
        "id": share.id,
        "token": share.token,
        "study": study,
        "expires": iso_time(share.expires_at),
        "expires_in": max(0, share.expires_at - int(time.time())),
    }
    if settings.viewer:
        origin = service_base_url(request, settings).removesuffix(settings.root_path)
        query = urlencode({"StudyInstanceUIDs": study, "token": share.token})
        body["viewer_url"] = f"{origin}/viewer?{query}"
    response = _json(body, status_code=201)
    response.headers["Location"] = f"{service_base_url(request, settings)}/shares/{share.id}"
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke_share(request: Request) -> Response:
    """`DELETE /shares/{share}`: by its creator, or an admin."""
    principal = principal_of(request)
    owner = None if principal.has(ADMIN) else owner_of(principal)
    share_id = request.path_params["share"]
    if not await run_in_threadpool(_access(request).shares.revoke, share_id, owner):
        raise NotFound(f"no share {share_id} of yours is active")
    return Response(status_code=204)


def access_routes() -> list[Route]:
    return [
        Route(STUDY + "/labels", retrieve_study_labels, methods=["GET"]),
        Route(STUDY + "/labels/{label}", add_study_label, methods=["PUT"]),
        Route(STUDY + "/labels/{label}", remove_study_label, methods=["DELETE"]),
        Route(STUDY + "/share", create_share, methods=["POST"]),
        Route("/shares/{share}", revoke_share, methods=["DELETE"]),
    ]
