//! Parity generation, reconstruction and read-modify-write for `k` data and
//! `m` parity chunks (API fixed; implementation in progress).

use crate::kernels::Kernel;

/// Largest number of parity chunks per stripe.
pub const MAX_PARITY: usize = 6;
/// Largest number of data chunks per stripe (limit of the extended Cauchy matrix).
pub const MAX_DATA: usize = 251;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("invalid shape: {0}")]
    Shape(String),
    #[error("buffer lengths differ: {0}")]
    Length(String),
    #[error("cannot reconstruct: {missing} chunks missing but only {parity} parity chunks")]
    TooManyMissing { missing: usize, parity: usize },
    #[error("chunk index {index} out of range for {total} chunks")]
    Index { index: usize, total: usize },
}

/// An encoder/decoder for one stripe shape. Cheap to clone, thread-safe.
#[derive(Debug, Clone)]
pub struct Codec {
    k: usize,
    m: usize,
    kernel: &'static Kernel,
}

impl Codec {
    /// `k` data chunks (1..=251) and `m` parity chunks (0..=6), on the active kernel.
    pub fn new(k: usize, m: usize) -> Result<Self, CodecError> {
        Self::with_kernel(k, m, crate::kernels::active())
    }

    /// As [`Codec::new`] on a chosen kernel (tests, benchmarks).
    pub fn with_kernel(k: usize, m: usize, kernel: &'static Kernel) -> Result<Self, CodecError> {
        Ok(Codec { k, m, kernel })
    }

    pub fn data_chunks(&self) -> usize {
        self.k
    }

    pub fn parity_chunks(&self) -> usize {
        self.m
    }

    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name
    }

    /// Compute all `m` parity chunks from the `k` data chunks.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodecError> {
        let _ = (data, parity);
        unimplemented!()
    }

    /// `chunks` holds all `k + m` chunks (data first, then parity); those whose
    /// indices are in `missing` are recomputed from the others in one pass.
    pub fn reconstruct(&self, chunks: &mut [&mut [u8]], missing: &[usize]) -> Result<(), CodecError> {
        let _ = (chunks, missing);
        unimplemented!()
    }

    /// Read-modify-write: data chunk `index` changes from `old` to `new`;
    /// update all `m` parity chunks in place without the rest of the stripe.
    pub fn update(&self, index: usize, old: &[u8], new: &[u8], parity: &mut [&mut [u8]]) -> Result<(), CodecError> {
        let _ = (index, old, new, parity);
        unimplemented!()
    }
}
