"""Per-client rate limiting: token buckets per rule and key, local to the
process or shared by every replica through Redis (global_sync.py)."""
from .limiter import LiftError, Limited, RateLimiter

__all__ = ["LiftError", "Limited", "RateLimiter"]
