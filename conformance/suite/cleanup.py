"""Deleting the uploaded test data: ``DELETE {url}/studies/{uid}``.

PS3.18 has no Delete transaction for the Studies Service; removing studies is a common
extension (dcm4chee, Google Cloud, Azure), so an absent DELETE is *not supported*.
"""

from __future__ import annotations

from .client import describe
from .context import Context
from .registry import UNSUPPORTED_STATUSES, Skipped, check, ensure, unsupported

DELETED = (200, 202, 204)


@check("cleanup.delete-study", "extension (not in PS3.18)", "DELETE /studies/{uid} removes data")
def delete_uploaded_studies(ctx: Context) -> str:
    if not ctx.cleanup:
        raise Skipped("--no-cleanup: test data left on the server")
    main = ctx.data.main.uid
    resp = ctx.client.request("DELETE", f"studies/{main}")
    if resp.status_code in UNSUPPORTED_STATUSES or resp.status_code == 403:
        unsupported(f"DELETE answered {describe(resp)[:60]}; test data left on the server")
    ensure(resp.status_code in DELETED, f"DELETE answered {describe(resp)}")
    others = [s.uid for s in ctx.data.studies.values() if s.uid != main] + [ctx.data.uid(9)]
    for uid in others:
        other = ctx.client.request("DELETE", f"studies/{uid}")
        ensure(other.status_code in (*DELETED, 404), f"DELETE {uid[-10:]}: {describe(other)}")
    ensure(not ctx.study_uids(f"StudyInstanceUID={main}"), "study still searchable after DELETE")
    return f"{resp.status_code}; {len(others) + 1} studies deleted"
