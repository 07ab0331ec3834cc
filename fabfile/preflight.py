"""Preflight: read-only checks before a migration, each ok / warn / fail with host, object and fix.

Never changes anything on either server.
"""
from __future__ import annotations

from .steps import Run


def preflight(run: Run) -> bool:
    """Run every check, print one line each; return False when any check failed."""
    return True  # stub: filled in by the preflight work
