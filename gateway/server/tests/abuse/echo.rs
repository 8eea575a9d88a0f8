//! Abuse: echo (filled in by the hardening work).
