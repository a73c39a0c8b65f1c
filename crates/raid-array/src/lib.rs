//! The raidfs engine (in progress).
