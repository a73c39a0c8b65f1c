//! raidfs-sync (in progress).
