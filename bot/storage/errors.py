"""The store's own errors (a database that cannot be opened, a row that exists already or not at all)."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of the store's own errors."""


class AlreadyExists(StorageError):
    """The row to create exists already (e.g. a custom model with that name in this server)."""


class NotFound(StorageError):
    """The row to change does not exist."""
