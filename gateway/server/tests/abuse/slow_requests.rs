//! Abuse: slow_requests (filled in by the hardening work).
