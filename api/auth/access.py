"""Access control for one running service: credentials, a short cache, rate limits.

Checking a credential is one indexed lookup; the ingest path answers thousands of
requests a second, so a credential found valid is remembered for
``Settings.auth_cache_seconds`` (2 s). Its expiry is still checked on every request, and
a revocation or logout through this process forgets the cache at once; a revocation made
elsewhere (the CLI, another worker) takes effect within those seconds. Failures are
never cached.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime

from api.auth.caller import Caller
from api.auth.credentials import secret_digest, still_valid
from api.auth.identities import Identities
from api.auth.limits import Rate, RateLimiter
from api.auth.policy import Limit
from api.auth.sealing import SeedSeal
from api.auth.sessions import Sessions
from ledger.clock import Clock
from ledger.crypto.keyring import KeyRing
from ledger.ingest import Protection
from ledger.protection import load_key_ring
from ledger.settings import Settings
from ledger.store import LedgerStore

CACHE_ENTRIES = 10_000
# Requests presenting an unknown, revoked or expired credential, per client address:
# generous for a misconfigured application, hard on anyone trying credentials.
UNAUTHENTICATED_RATE = Rate(5.0, 20.0)


def rates_of(settings: Settings) -> dict[str, Rate]:
    return {
        Limit.INGEST.value: Rate(settings.rate_ingest, 2 * settings.rate_ingest),
        Limit.READ.value: Rate(settings.rate_read, 2 * settings.rate_read),
        Limit.ADMIN.value: Rate(settings.rate_admin, 2 * settings.rate_admin),
        Limit.LOGIN.value: Rate.per_minute(settings.rate_login),
        "unauthenticated": UNAUTHENTICATED_RATE,
    }


class Access:
    """Authenticates bearer credentials and meters requests, for one process.

    Guarantees: :meth:`authenticate` answers a caller only for a credential that is
    known, unrevoked (as of at most ``cache_seconds`` ago, or now if revoked through
    this process) and unexpired at the moment of the request.
    """

    def __init__(self, identities: Identities, settings: Settings, clock: Clock) -> None:
        self.identities = identities
        self.sessions = Sessions(identities)
        self.clock = clock
        self.cache_seconds = settings.auth_cache_seconds
        self.rates = rates_of(settings)
        self.limiter = RateLimiter()
        self._cache: dict[str, tuple[float, Caller, datetime | None]] = {}
        self._lock = threading.Lock()

    async def authenticate(self, secret: str) -> Caller | None:
        digest = secret_digest(secret)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            _, caller, expires = hit
            return caller if still_valid(expires, False, now) else None
        found = await asyncio.to_thread(self.identities.authenticate, secret)
        if found is None:
            with self._lock:
                self._cache.pop(digest, None)
            return None
        caller, expires = found
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[digest] = (time.monotonic() + self.cache_seconds, caller, expires)
        return caller

    def forget(self) -> None:
        """Drop every cached credential (after a revocation or logout here)."""
        with self._lock:
            self._cache.clear()

    def wait(self, limit: str, key: str) -> float:
        """0.0 when the request may go ahead (and it is counted), else seconds to wait."""
        rate = self.rates.get(limit)
        if rate is None:
            return 0.0
        return self.limiter.check(limit, key, self.clock().timestamp(), rate)


def build_access(settings: Settings, store: LedgerStore, protection: Protection,
                 clock: Clock) -> Access:
    """The authenticator of a running service over its store. TOTP seeds are sealed
    under the service's key ring (loaded on first use when PHI is stored in plain text
    for a benchmark, which otherwise never loads it)."""
    ring = getattr(protection, "ring", None)

    def key_ring() -> KeyRing:
        return ring if isinstance(ring, KeyRing) else load_key_ring(settings, store)

    identities = Identities(store, clock, fingerprint=protection.fingerprint,
                            seeds=SeedSeal(key_ring), session_minutes=settings.session_minutes)
    return Access(identities, settings, clock)
