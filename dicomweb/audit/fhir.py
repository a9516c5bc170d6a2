"""Audit records as FHIR R4 AuditEvent resources, after IHE Basic Audit Log Patterns (BALP
1.1.3, https://profiles.ihe.net/ITI/BALP) and DICOM PS3.15 A.5.3.

BALP is privacy centric: each AuditEvent names at most one patient, so a record touching studies
of several patients (a study list, a STOW of many patients) becomes one AuditEvent per patient,
as BALP's PatientQuery asks; the DICOM event code (PS3.16 CID 400) is a second `subtype`.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
OUTCOME = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PROVENANCE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
NETWORK = "http://terminology.hl7.org/CodeSystem/network-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP = "https://profiles.ihe.net/ITI/BALP"
BALP_ENTITY_TYPE = BALP + "/CodeSystem/BasicAuditEntityType"
#: Stable ids for bundle entries: the same record always gets the same urn:uuid.
NAMESPACE = uuid.UUID("6f1c1b0e-2a55-4c59-9a43-5b7a7e1d0a11")

#: operation → (FHIR action, restful interaction, BALP profile)
OPERATIONS = {
    "read": ("R", "read", "Read"),
    "query": ("E", "search", "Query"),
    "create": ("C", "create", "Create"),
    "update": ("U", "update", "Update"),
    "delete": ("D", "delete", "Delete"),
}
SOURCE_ROLE = {"system": DCM, "code": "110153", "display": "Source Role ID"}
DESTINATION_ROLE = {"system": DCM, "code": "110152", "display": "Destination Role ID"}
APPLICATION = {"system": DCM, "code": "110150", "display": "Application"}
CUSTODIAN = {"system": PROVENANCE, "code": "custodian", "display": "Custodian"}
#: operation → (client agent type, server agent type): BALP Read has the data flowing to the
#: client (Destination), Query/Create/Update the request flowing to the server, Delete its own.
AGENT_ROLES = {
    "read": (DESTINATION_ROLE, SOURCE_ROLE),
    "query": (SOURCE_ROLE, DESTINATION_ROLE),
    "create": (SOURCE_ROLE, DESTINATION_ROLE),
    "update": (SOURCE_ROLE, DESTINATION_ROLE),
    "delete": (APPLICATION, CUSTODIAN),
}
#: Reads that do not transfer instances, only their attributes or derived JSON (A.5.3.6).
ACCESS_ONLY = ("/metadata", "/rt", "/labels")


def dicom_event(record: dict[str, Any]) -> dict[str, str]:
    """The PS3.15 A.5.3 event (PS3.16 CID 400) of a record."""
    operation, path = record["operation"], record["path"]
    if path.endswith("/audit"):
        code = ("110101", "Audit Log Used")
    elif operation == "query":
        code = ("110112", "Query")
    elif operation == "create":
        code = ("110104", "DICOM Instances Transferred")
    elif operation == "delete" and "/series/" not in path:
        code = ("110105", "DICOM Study Deleted")
    elif operation == "read" and not any(part in path for part in ACCESS_ONLY):
        code = ("110102", "Begin Transferring DICOM Instances")
    else:
        code = ("110103", "DICOM Instances Accessed")
    return {"system": DCM, "code": code[0], "display": code[1]}


def outcome(status: int) -> dict[str, str]:
    if status < 400:
        return {"system": OUTCOME, "code": "0", "display": "Success"}
    if status < 500:
        return {"system": OUTCOME, "code": "4", "display": "Minor failure"}
    return {"system": OUTCOME, "code": "8", "display": "Serious failure"}


def patient_groups(record: dict[str, Any]) -> list[tuple[tuple[str, str] | None, list[dict]]]:
    """The record's studies grouped by patient (None: studies the index did not know)."""
    groups: dict[tuple[str, str] | None, list[dict]] = {}
    for study in record["studies"]:
        key = None if study["patient_id"] is None else (
            study["patient_id"], study["issuer_of_patient_id"] or "")
        groups.setdefault(key, []).append(study)
    return list(groups.items()) or [(None, [])]


def audit_events(record: dict[str, Any], server_url: str,
                 patient: str | None = None) -> list[dict[str, Any]]:
    """One AuditEvent per patient of the record (only `patient`'s when given)."""
    groups = patient_groups(record)
    if patient is not None:
        groups = [g for g in groups if g[0] is not None and g[0][0] == patient]
    events = []
    for number, (who, studies) in enumerate(groups):
        resource_id = str(record["seq"]) if len(groups) == 1 else f"{record['seq']}-{number + 1}"
        events.append(audit_event(record, resource_id, who, studies, server_url))
    return events


def audit_event(record: dict[str, Any], resource_id: str, patient: tuple[str, str] | None,
                studies: list[dict], server_url: str) -> dict[str, Any]:
    operation = record["operation"]
    action, interaction, profile = OPERATIONS[operation]
    status = record["status"]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": resource_id,
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": RESTFUL, "code": interaction, "display": interaction},
                    dicom_event(record)],
        "action": action,
        "recorded": record["time"],
        "outcome": outcome(status)["code"],
        "outcomeDesc": f"HTTP {status}" + (" (access denied)" if record["action"] == "denied"
                                            else ""),
        "agent": agents(record, server_url),
        "source": {"observer": {"display": server_url},
                   "type": [{"system": SOURCE_TYPE, "code": "4",
                             "display": "Application Server"}]},
        "entity": entities(record, patient, studies),
    }
    if status < 400:  # BALP profiles describe successes; failures are plain AuditEvents
        name = ("Patient" if patient else "") + profile
        event["meta"] = {"profile": [f"{BALP}/StructureDefinition/IHE.BasicAudit.{name}"]}
    return event


def agents(record: dict[str, Any], server_url: str) -> list[dict[str, Any]]:
    client_role, server_role = AGENT_ROLES[record["operation"]]
    user_type = "IRCP" if record["operation"] in ("read", "query") else "AUT"
    user = {
        "type": {"coding": [{"system": PARTICIPATION, "code": user_type}]},
        "who": {"identifier": {"value": record["user"]},
                "display": f"{record['user_kind']}:{record['user']}"},
        "name": record["user"],
        "requestor": True,
    }
    client = {
        "type": {"coding": [client_role]},
        "who": {"display": record["client_address"] or "unknown"},
        "requestor": False,
        "network": {"address": record["client_address"] or "unknown", "type": "2"},
    }
    if record["client_id"]:  # BALP OAuth: the app the token was issued to
        client["who"] = {"identifier": {"value": record["client_id"]},
                         "display": record["client_id"]}
    server = {
        "type": {"coding": [server_role]},
        "who": {"display": server_url},
        "requestor": False,
        "network": {"address": server_url, "type": "5"},
    }
    return [user, client, server]


def entities(record: dict[str, Any], patient: tuple[str, str] | None,
             studies: list[dict]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if patient is not None:
        identifier: dict[str, Any] = {"value": patient[0]}
        if patient[1]:
            identifier["assigner"] = {"display": patient[1]}
        found.append({
            "what": {"type": "Patient", "identifier": identifier},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        })
    for study in studies:
        details = [{"type": "SeriesInstanceUID", "valueString": uid}
                   for uid in study["series_instance_uids"]]
        details += [{"type": "SOPInstanceUID", "valueString": uid}
                    for uid in study["sop_instance_uids"]]
        entity: dict[str, Any] = {
            "what": {"identifier": {
                "system": "urn:dicom:uid", "value": f"urn:oid:{study['study_instance_uid']}",
                "type": {"coding": [{"system": DCM, "code": "110180",
                                     "display": "Study Instance UID"}]}}},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"},
        }
        if details:
            entity["detail"] = details
        found.append(entity)
    if record["operation"] == "query":  # BALP Query: the raw request, base64, and as text
        raw = record["path"] + (f"?{record['query']}" if record["query"] else "")
        found.append({
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": base64.b64encode(raw.encode()).decode(),
            "description": raw,
        })
    found.append({
        "what": {"identifier": {"value": record["request_id"]}},
        "type": {"system": BALP_ENTITY_TYPE, "code": "XrequestId"},
    })
    return found


def bundle(records: list[dict[str, Any]], server_url: str,
           patient: str | None = None) -> dict[str, Any]:
    """A FHIR R4 searchset Bundle of the records' AuditEvents."""
    entries = []
    for record in records:
        for event in audit_events(record, server_url, patient):
            key = f"{record['hash']}/{event['id']}"
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid5(NAMESPACE, key)}",
                            "resource": event, "search": {"mode": "match"}})
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}
