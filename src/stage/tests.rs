//! Unit tests for staging.
