//! The raidfs engine (in progress).

pub mod member;
