//! Abuse: lab (filled in by the hardening work).
