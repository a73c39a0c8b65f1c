//! Long-running operations.
