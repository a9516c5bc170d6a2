"""The audit trail: every request that touches patient data, recorded in the database before
its response starts, in a hash chain that shows any later change (DICOM PS3.15 A.5, IHE BALP).

`AuditTrail(store)` registers the tables with the store and owns the group-commit writer;
`AuditMiddleware` records the requests; `audit_routes()` serves `GET /audit`;
`AuditTrail.verify()` checks the chain (`dicomweb audit verify`).
"""

from dicomweb.audit.middleware import AuditMiddleware
from dicomweb.audit.routes import audit_routes
from dicomweb.audit.trail import AuditTrail

__all__ = ["AuditMiddleware", "AuditTrail", "audit_routes"]
