//! The encoding matrix and GF(2⁸) matrix inversion (in progress).
