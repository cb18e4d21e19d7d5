"""Durable state: database schema and the ``Store`` that reads and writes it."""

from hyper_ls_backend.store.repository import Ledger, Store

__all__ = ["Ledger", "Store"]
