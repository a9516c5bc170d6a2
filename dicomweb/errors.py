"""Typed errors: each carries its HTTP status, optional DICOM reason and a human message.

They are raised anywhere and turned into responses in one place (`app.handle_dicomweb_error`).
"""

from __future__ import annotations


class DicomWebError(Exception):
    status_code = 500

    def __init__(self, message: str, *, parameter: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        #: Response headers the error needs (e.g. WWW-Authenticate of a 401).
        self.headers = headers

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.status_code, "message": self.message}
        if self.parameter:
            body["parameter"] = self.parameter
        return {"error": body}


class BadRequest(DicomWebError):
    status_code = 400


class NotFound(DicomWebError):
    status_code = 404


class Unauthorized(DicomWebError):
    """No credentials, or credentials that are not valid (RFC 6750 3.1)."""

    status_code = 401


class Forbidden(DicomWebError):
    """Valid credentials without the scope the request needs; the message names it."""

    status_code = 403


class NotAcceptable(DicomWebError):
    status_code = 406


class Conflict(DicomWebError):
    status_code = 409


class PayloadTooLarge(DicomWebError):
    status_code = 413


class UnsupportedMediaType(DicomWebError):
    status_code = 415


class Unprocessable(DicomWebError):
    """The resource exists but cannot be shown the way asked (e.g. a series that is no volume)."""

    status_code = 422


class ServiceUnavailable(DicomWebError):
    """Busy for now (e.g. the pixel memory is in use): the client may retry after a while."""

    status_code = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InstanceRejected(Exception):
    """One STOW part cannot be stored; `reason` is the PS3.18 Table 10.5.3-3 FailureReason."""

    def __init__(
        self,
        reason: int,
        message: str,
        *,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


# PS3.18 Table 10.5.3-3 (failure) and PS3.4 Annex B C-STORE statuses used as STOW reasons.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
#: PS3.7 C.4 general status "Refused: Not authorized".
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
# Warning reasons.
COERCION_OF_DATA_ELEMENTS = 0xB000
DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
