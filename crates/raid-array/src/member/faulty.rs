//! Fault-injecting member backend (see below).
