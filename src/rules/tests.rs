//! Unit tests for the rule views.
