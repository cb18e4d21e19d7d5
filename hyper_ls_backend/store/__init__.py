"""Durable state: database schema and the ``Store`` that reads and writes it."""

from hyper_ls_backend.store.repository import Labelled, Store

__all__ = ["Labelled", "Store"]
