//! Abuse: history (filled in by the hardening work).
