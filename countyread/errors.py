"""One error hierarchy for the whole service.

Every error the service raises on purpose derives from :class:`CountyReadError`; the API
maps the hierarchy to HTTP statuses in one handler and the DICOM node maps it to DIMSE
statuses, so no feature package invents its own base class.
"""

from __future__ import annotations


class CountyReadError(Exception):
    """Base class of all deliberate CountyRead errors."""

    http_status = 500


class ConfigurationError(CountyReadError):
    """Settings are missing or invalid."""


class InvalidInputError(CountyReadError):
    """Input from a peer or a user is malformed (bad UID, corrupt file, bad request)."""

    http_status = 400


class NotFoundError(CountyReadError):
    """A study, series, finding, node or user does not exist."""

    http_status = 404


class ConflictError(CountyReadError):
    """The request conflicts with the current state (claimed by another, already signed)."""

    http_status = 409


class PermissionDeniedError(CountyReadError):
    """The user's role does not allow the action."""

    http_status = 403


class AuthenticationError(CountyReadError):
    """Missing or invalid credentials."""

    http_status = 401


class TooManyRequestsError(CountyReadError):
    """Too many attempts (failed logins); ``retry_after_s`` says when to try again."""

    http_status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotAnalyzableError(CountyReadError):
    """A series cannot be analysed; the message is the reason shown in the worklist."""

    http_status = 422


class ModelError(CountyReadError):
    """A model artifact is missing, corrupt (sha256 mismatch) or cannot run."""


class StorageError(CountyReadError):
    """The file store or the database could not persist data."""

    http_status = 503


class DeliveryError(CountyReadError):
    """A result could not be delivered to a DICOM destination."""

    http_status = 502
