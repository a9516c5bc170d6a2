"""Imported last by the ingest pool's fork server (see `ingest_pool.WORKER_MODULES`), so that
the workers forked from it inherit what each would otherwise do at its first RT object:
SQLAlchemy configures its mappers when the first mapped object is made (an RT index row),
11-19 ms that fell on every worker's first RT batch."""

from sqlalchemy.orm import configure_mappers

import dicomweb.rt.indexing  # noqa: F401 -- every class an RT index row maps to

configure_mappers()
