//! Naive reference implementations (in progress).
