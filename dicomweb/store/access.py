"""What a caller may see, as a filter the store composes into its own queries.

The store knows nothing of tokens or principals (dicomweb.access turns a caller into these
values); it only knows studies and their labels. A filter restricts by labels (a study is
visible when it carries at least one of them), by one study (a share link), or both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    delete,
    exists,
    false,
    select,
    true,
    union,
)

from dicomweb.store.tables import Instance, Series, Study, StudyLabel

STUDY_LABELS = StudyLabel.__table__
STUDIES = Study.__table__
SERIES = Series.__table__
INSTANCES = Instance.__table__


@dataclass(frozen=True)
class StudyFilter:
    """Which studies a caller may see. `labels` None: any labels; `study` None: any study."""

    labels: frozenset[str] | None = None
    study: str | None = None

    @property
    def unrestricted(self) -> bool:
        return self.labels is None and self.study is None

    def clause(self, study_column: ColumnElement[str]) -> ColumnElement[bool]:
        """SQL true for the rows whose `study_column` names a visible study."""
        clauses: list[ColumnElement[bool]] = []
        if self.study is not None:
            clauses.append(study_column == self.study)
        if self.labels is not None:
            clauses.append(labelled(study_column, self.labels))
        return and_(true(), *clauses)


#: Every study: anonymous callers of an open server, admins, `--study-access all`.
EVERY_STUDY = StudyFilter()


def labelled(study_column: ColumnElement[str], labels: frozenset[str]) -> ColumnElement[bool]:
    if not labels:
        return false()  # a caller with no labels sees no study
    return exists().where(
        STUDY_LABELS.c.study_instance_uid == study_column,
        STUDY_LABELS.c.label.in_(sorted(labels)),
    )


def unlabelled(study_column: ColumnElement[str]) -> ColumnElement[bool]:
    return ~exists().where(STUDY_LABELS.c.study_instance_uid == study_column)


@dataclass(frozen=True)
class StudyWriter:
    """Who stores: the labels its new instances' studies get, and the existing studies it may
    add to (those it may see, and studies that carry no label yet)."""

    labels: frozenset[str] = frozenset()
    studies: StudyFilter = EVERY_STUDY

    def may_add_to(self, study_column: ColumnElement[str]) -> ColumnElement[bool]:
        if self.studies.unrestricted:
            return true()
        visible = self.studies.clause(study_column)
        if self.studies.study is not None:
            return visible
        return visible | unlabelled(study_column)


#: Stores into any study and labels nothing (open servers, import, tests).
ANY_WRITER = StudyWriter()


# --- queries ------------------------------------------------------------------------------
def label_studies(connection: Connection, studies: list[str], labels: frozenset[str]) -> None:
    """Give `studies` the `labels` (inside the caller's index transaction)."""
    if not studies or not labels:
        return
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(STUDY_LABELS).on_conflict_do_nothing(
        index_elements=["study_instance_uid", "label"])
    rows = [{"study_instance_uid": s, "label": label} for s in studies for label in sorted(labels)]
    connection.execute(statement, rows)


def visible_objects(engine: Engine, access: StudyFilter, uids: Iterable[str]) -> set[str]:
    """Those of `uids` that name a stored study, series or instance in a study visible
    through `access` (one query)."""
    wanted = sorted(set(uids))
    if not wanted:
        return set()
    statement = union(
        select(STUDIES.c.study_instance_uid).where(
            STUDIES.c.study_instance_uid.in_(wanted),
            access.clause(STUDIES.c.study_instance_uid)),
        select(SERIES.c.series_instance_uid).where(
            SERIES.c.series_instance_uid.in_(wanted),
            access.clause(SERIES.c.study_instance_uid)),
        select(INSTANCES.c.sop_instance_uid).where(
            INSTANCES.c.sop_instance_uid.in_(wanted),
            access.clause(INSTANCES.c.study_instance_uid)),
    )
    with engine.connect() as connection:
        return {uid for (uid,) in connection.execute(statement)}


def visible_studies(engine: Engine, access: StudyFilter, studies: Iterable[str]) -> set[str]:
    """Those of `studies` that are stored and visible through `access`."""
    wanted = sorted(set(studies))
    if not wanted:
        return set()
    if access.study is not None and access.labels is None:
        wanted = [uid for uid in wanted if uid == access.study]
    statement = select(STUDIES.c.study_instance_uid).where(
        STUDIES.c.study_instance_uid.in_(wanted), access.clause(STUDIES.c.study_instance_uid))
    with engine.connect() as connection:
        return {uid for (uid,) in connection.execute(statement)}


def study_labels(engine: Engine, study: str) -> list[str] | None:
    """The study's labels, sorted; None when no such study is stored."""
    with engine.connect() as connection:
        if connection.execute(
                select(STUDIES.c.study_instance_uid).where(
                    STUDIES.c.study_instance_uid == study)).first() is None:
            return None
        return sorted(label for (label,) in connection.execute(
            select(STUDY_LABELS.c.label).where(STUDY_LABELS.c.study_instance_uid == study)))


def add_study_label(engine: Engine, study: str, label: str) -> list[str] | None:
    """Label a stored study; its labels after, or None when no such study is stored."""
    with engine.begin() as connection:
        if connection.execute(
                select(STUDIES.c.study_instance_uid).where(
                    STUDIES.c.study_instance_uid == study)).first() is None:
            return None
        label_studies(connection, [study], frozenset({label}))
    return study_labels(engine, study)


def remove_study_label(engine: Engine, study: str, label: str) -> bool:
    """Take a label off a study; False when the study does not carry it."""
    with engine.begin() as connection:
        removed = connection.execute(delete(STUDY_LABELS).where(
            STUDY_LABELS.c.study_instance_uid == study, STUDY_LABELS.c.label == label))
    return bool(removed.rowcount)
