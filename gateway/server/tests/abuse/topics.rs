//! Abuse: topics (filled in by the hardening work).
