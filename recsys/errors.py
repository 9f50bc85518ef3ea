"""Domain errors. The service maps each to one gRPC status in one place
(service/interceptors.py), so the core never imports grpc."""
from __future__ import annotations


class EthicrecError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidRequest(EthicrecError):
    """The caller's input is wrong; `field` is the path to the bad field
    (e.g. ``candidates[3].item_id``) so clients can point at it."""

    def __init__(self, field: str, message: str) -> None:
        # An empty field: the request as a whole (e.g. bytes that are not a request at all).
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.description = message


class ArtifactError(EthicrecError):
    """An artifact directory is missing, incomplete or corrupt."""


class AuditFailure(EthicrecError):
    """The audit could not complete; the ranking must not be returned unaudited.

    `status` is the gRPC status name the policy chose for this case
    ("INTERNAL" or "UNAVAILABLE"); the core only carries the name.
    """

    def __init__(self, message: str, status: str = "INTERNAL") -> None:
        super().__init__(message)
        self.status = status


class ConfigError(EthicrecError):
    """Configuration (service config or audit policy) is invalid; names the key."""
