//! Abuse: json (filled in by the hardening work).
