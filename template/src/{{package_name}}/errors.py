"""The project's own errors. Callers (HTTP layer, workers) map these, not driver errors."""


class DomainError(Exception):
    """Base class of every error the data and service layers raise on purpose."""


class NotFoundError(DomainError):
    def __init__(self, entity: str, public_id: object) -> None:
        super().__init__(f"{entity} {public_id} not found")
        self.entity = entity
        self.public_id = public_id


class ConflictError(DomainError):
    """The request is valid but conflicts with the current state of the data."""


class DuplicateError(ConflictError):
    """A unique value (for example an email address) is already taken."""


class ConcurrentModificationError(ConflictError):
    """Optimistic locking: the row changed since the caller read it."""


class InsufficientFundsError(ConflictError):
    """A transfer would take an account below zero."""


class InvalidOperationError(DomainError):
    """The request can never succeed as given (e.g. a transfer to the same account)."""


class InvalidDataError(InvalidOperationError):
    """The database refused a value (too long, out of range, malformed): never truncated."""
