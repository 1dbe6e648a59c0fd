"""Test certificates: made in ``benchmarks.certs`` (the ATNA benchmark serves TLS too)."""

from benchmarks.certs import Pki

__all__ = ["Pki"]
