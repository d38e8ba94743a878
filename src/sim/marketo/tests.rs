//! Simulator unit tests.
