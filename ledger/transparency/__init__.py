"""Verifiability, pure: RFC 9162 Merkle trees and proofs, C2SP signed notes and checkpoints.

Nothing here touches a database or the network. The modules, bottom up:

- :mod:`~ledger.transparency.tree`: tree hashing, and proof generation from the hashes of
  perfect subtrees (what a table of full-subtree nodes serves), plus the frontier that
  appends leaves incrementally;
- :mod:`~ledger.transparency.proof`: inclusion and consistency verification, exactly as
  RFC 9162 sections 2.1.3.2 and 2.1.4.2 give them;
- :mod:`~ledger.transparency.note`: C2SP signed notes, Ed25519 keys and witness cosignatures;
- :mod:`~ledger.transparency.checkpoint`: the C2SP checkpoint body and opening a signed one;
- :mod:`~ledger.transparency.bundle`: offline proof bundles (c2sp.org/tlog-proof).

Every failure to verify raises a subclass of :class:`~ledger.transparency.errors.TransparencyError`
(itself a ``ValueError``); nothing returns a boolean that a caller could forget to check.
"""
