//! Abuse: origin (filled in by the hardening work).
