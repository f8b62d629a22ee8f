"""Why an event was rejected: a machine-readable reason code and a human message."""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Stable codes carried into the dead-letter topic; dashboards group by them."""

    MALFORMED = "malformed"  # not valid JSON / not bytes
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    BAD_FIELD = "bad_field"  # wrong type or value
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"  # encoded event above schemas.envelope.MAX_EVENT_BYTES
    PII_DETECTED = "pii_detected"
    PROCESSING_FAILED = "processing_failed"


class EventValidationError(ValueError):
    """An event failed validation.

    >>> err = EventValidationError(ReasonCode.MISSING_FIELD, "payload.task_id is required")
    >>> err.reason, str(err)
    (<ReasonCode.MISSING_FIELD: 'missing_field'>, 'missing_field: payload.task_id is required')
    """

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message

    def as_dict(self) -> dict[str, str]:
        """The shape written into dead-letter records."""
        return {"reason": self.reason.value, "error": self.message}
