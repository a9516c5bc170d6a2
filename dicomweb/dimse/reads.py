"""Every read the DIMSE services make of the store, for one principal.

The store answers "what may this principal see" itself (access control composes it into its
queries); the DIMSE services never filter results. Until the store takes a principal, a
principal restricted to labels sees nothing rather than everything: `visible` is the one
place that changes when the store filter is in.
"""

from __future__ import annotations

from dicomweb.access import Principal
from dicomweb.qido import SearchQuery
from dicomweb.store import patients as store_patients
from dicomweb.store import query as store_query
from dicomweb.store.query import SearchResult
from dicomweb.store.repository import InstanceLocation, Store

NOTHING = SearchResult([], False)


def visible(principal: Principal) -> bool:
    """False when the principal may see only some studies and the store cannot yet say which."""
    return principal.labels is None and principal.study is None


def search(store: Store, query: SearchQuery, principal: Principal) -> SearchResult:
    """QIDO's matching engine at STUDY, SERIES or INSTANCE level (DICOM JSON results)."""
    if not visible(principal):
        return NOTHING
    return store_query.search(store.engine, query, "")


def search_patients(store: Store, query: SearchQuery, principal: Principal) -> SearchResult:
    """The same engine at PATIENT level: patients with at least one matching study."""
    if not visible(principal):
        return NOTHING
    return store_patients.search_patients(store.engine, query)


def locate(
    store: Store, principal: Principal, study: str, series: str | None = None
) -> list[InstanceLocation]:
    """Instances of a study or series in a stable order; [] if none is visible."""
    if not visible(principal):
        return []
    from dicomweb.errors import NotFound

    try:
        return store.locate(study, series)
    except NotFound:
        return []
