"""Edge models, licence types, identifiers and validators, and the error tree."""

from __future__ import annotations

from schemas.citizen_id import (
    citizen_id_check_character,
    make_citizen_id,
    mask_holder_id,
    validate_citizen_id,
)
from schemas.identifiers import (
    ID_PREFIX,
    LicenceIdentifier,
    mod37_36_check_character,
    validate_type_code,
)
from schemas.licence_types import LicenceType, LicenceTypeRegistry, load_licence_types
from schemas.requests import (
    DepartmentCreate,
    HolderIn,
    LicenceCreate,
    parse_licence_request,
    validate_licence_request,
)
from schemas.uscc import is_valid_uscc, make_uscc, uscc_check_character, validate_uscc

__all__ = [
    "ID_PREFIX",
    "DepartmentCreate",
    "HolderIn",
    "LicenceCreate",
    "LicenceIdentifier",
    "LicenceType",
    "LicenceTypeRegistry",
    "citizen_id_check_character",
    "is_valid_uscc",
    "load_licence_types",
    "make_citizen_id",
    "make_uscc",
    "mask_holder_id",
    "mod37_36_check_character",
    "parse_licence_request",
    "uscc_check_character",
    "validate_citizen_id",
    "validate_licence_request",
    "validate_type_code",
    "validate_uscc",
]
