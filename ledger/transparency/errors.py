"""The one exception family of :mod:`ledger.transparency`.

Each module raises its own subclass (``ProofError``, ``NoteError``, ``CheckpointError``,
``BundleError``); a caller that only wants "verified or not" catches this base.
"""

from __future__ import annotations


class TransparencyError(ValueError):
    """Something did not verify, or was not well formed enough to try."""
