//! Abuse: connections (filled in by the hardening work).
