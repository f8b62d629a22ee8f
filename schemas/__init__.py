"""Event schemas: the immutable envelope, the event catalog, validation and upcasting."""

from schemas.catalog import CATALOG, EventSpec, FieldSpec
from schemas.envelope import Envelope, decode, encode, from_dict, new_event, validate_payload
from schemas.errors import EventValidationError, ReasonCode
from schemas.ids import uuid7

__all__ = [
    "CATALOG", "Envelope", "EventSpec", "EventValidationError", "FieldSpec", "ReasonCode",
    "decode", "encode", "from_dict", "new_event", "uuid7", "validate_payload",
]
