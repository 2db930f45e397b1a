"""Kept for old imports: the hint lives in :mod:`journal.extras`."""

from .extras import install_hint

__all__ = ["install_hint"]
