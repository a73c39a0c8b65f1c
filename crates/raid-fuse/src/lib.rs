//! FUSE adapter for raidfs (in progress).
