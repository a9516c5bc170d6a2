"""Every read the DIMSE services make of the store, for one principal: the store composes
what the principal may see (access control's `StudyFilter`) into its own queries, so the
DIMSE services never filter results themselves."""

from __future__ import annotations

from dicomweb.access import Principal, study_filter
from dicomweb.errors import NotFound
from dicomweb.qido import SearchQuery
from dicomweb.store import patients as store_patients
from dicomweb.store import query as store_query
from dicomweb.store.query import SearchResult
from dicomweb.store.repository import InstanceLocation, Store


def search(store: Store, query: SearchQuery, principal: Principal) -> SearchResult:
    """QIDO's matching engine at STUDY, SERIES or INSTANCE level (DICOM JSON results)."""
    return store_query.search(store.engine, query, "", study_filter(principal, store.settings))


def search_patients(store: Store, query: SearchQuery, principal: Principal) -> SearchResult:
    """The same engine at PATIENT level: patients with at least one matching visible study."""
    return store_patients.search_patients(
        store.engine, query, study_filter(principal, store.settings)
    )


def locate(
    store: Store, principal: Principal, study: str, series: str | None = None
) -> list[InstanceLocation]:
    """Instances of a study or series in a stable order; [] if none is visible."""
    try:
        return store.locate(study, series, access=study_filter(principal, store.settings))
    except NotFound:
        return []
