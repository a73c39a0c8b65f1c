//! Parity generation, reconstruction and read-modify-write for `k` data and
//! `m` parity chunks, on top of one [`Kernel`].
//!
//! # Math
//!
//! With the encoding matrix `A` ([`crate::matrix`]), `P_i = ⊕_j A[i][j]·D_j`.
//!
//! - **Encode**: P is a plain XOR, P+Q the md RAID-6 kernel, rows 2.. the
//!   general matrix kernel.
//! - **Reconstruct** any set of at most `m` missing chunks in one pass over
//!   the survivors: with missing data `M` (`d = |M|`), surviving data `S`,
//!   and the first `d` surviving parity rows `R`,
//!   `A[R][M]·D_M = P_R ⊕ A[R][S]·D_S`, so with `E = A[R][M]⁻¹`
//!   (invertible: every square submatrix of `A` is),
//!   `D_M = E·P_R ⊕ (E·A[R][S])·D_S`, and every missing parity row `p` is
//!   `A[p][S]·D_S ⊕ A[p][M]·D_M`, again a combination of the same `k`
//!   sources `D_S ∪ P_R`. One coefficient matrix (one row per missing
//!   chunk, `k` columns) goes to a single `matmul` call, so each surviving
//!   byte is read once.
//! - **Update** (read-modify-write): the parity change from `D_x: old→new`
//!   is `A[i][x]·(old ⊕ new) = A[i][x]·old ⊕ A[i][x]·new`, accumulated into
//!   each parity chunk by `matmul` with `accumulate = true` over the two
//!   sources, without a temporary buffer.
//!
//! # Preconditions and errors
//!
//! Every public function validates its shape first (number of chunks,
//! equal lengths, indices) and returns [`CodecError`] instead of panicking;
//! any chunk length is allowed, including 0 and odd lengths, and no
//! alignment is required. Destinations never alias sources (`&mut`).
//! A `Codec` holds no mutable state: it is `Send + Sync` and clones share
//! the matrix.

use std::sync::Arc;

use crate::kernels::Kernel;
use crate::matrix::{self, Matrix};

/// Largest number of parity chunks per stripe.
pub const MAX_PARITY: usize = 6;
/// Largest number of data chunks per stripe (limit of the extended Cauchy matrix).
pub const MAX_DATA: usize = 251;

/// Why a codec call was refused. Every variant is detected before any
/// buffer is written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Unsupported `k`/`m`, a wrong number of chunks or buffers, or a chunk
    /// listed twice as missing.
    #[error("invalid shape: {0}")]
    Shape(String),
    /// Chunks of one call do not all have the same length.
    #[error("buffer lengths differ: {0}")]
    Length(String),
    /// More chunks are missing than there are parity chunks: the data is
    /// not recoverable from this stripe.
    #[error("cannot reconstruct: {missing} chunks missing but only {parity} parity chunks")]
    TooManyMissing { missing: usize, parity: usize },
    /// A chunk index is outside the stripe.
    #[error("chunk index {index} out of range for {total} chunks")]
    Index { index: usize, total: usize },
}

/// An encoder/decoder for one stripe shape. Cheap to clone, thread-safe.
#[derive(Debug, Clone)]
pub struct Codec {
    k: usize,
    m: usize,
    kernel: &'static Kernel,
    /// The `m × k` encoding matrix, shared between clones.
    matrix: Arc<Matrix>,
}

/// Every slice in `bufs` has length `len`.
fn check_lengths<'a>(
    len: usize,
    what: &str,
    bufs: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), CodecError> {
    for (i, b) in bufs.into_iter().enumerate() {
        if b.len() != len {
            return Err(CodecError::Length(format!(
                "{what} {i} has {} bytes, expected {len}",
                b.len()
            )));
        }
    }
    Ok(())
}

impl Codec {
    /// `k` data chunks (1..=251) and `m` parity chunks (0..=6), on the active kernel.
    pub fn new(k: usize, m: usize) -> Result<Self, CodecError> {
        Self::with_kernel(k, m, crate::kernels::active())
    }

    /// As [`Codec::new`] on a chosen kernel (tests, benchmarks).
    pub fn with_kernel(k: usize, m: usize, kernel: &'static Kernel) -> Result<Self, CodecError> {
        if k == 0 || k > MAX_DATA {
            return Err(CodecError::Shape(format!(
                "{k} data chunks, must be 1..={MAX_DATA}"
            )));
        }
        if m > MAX_PARITY {
            return Err(CodecError::Shape(format!(
                "{m} parity chunks, at most {MAX_PARITY}"
            )));
        }
        let matrix = matrix::encoding(m, k).map_err(|e| CodecError::Shape(e.to_string()))?;
        Ok(Codec {
            k,
            m,
            kernel,
            matrix: Arc::new(matrix),
        })
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

    /// The `m × k` encoding matrix (row `i` gives the coefficients of parity `i`).
    pub fn matrix(&self) -> &Matrix {
        &self.matrix
    }

    /// Compute all `m` parity chunks from the `k` data chunks.
    ///
    /// Preconditions (else an error, nothing written): `data.len() == k`,
    /// `parity.len() == m`, every buffer the same length.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodecError> {
        if data.len() != self.k {
            return Err(CodecError::Shape(format!(
                "{} data chunks given, codec has {}",
                data.len(),
                self.k
            )));
        }
        if parity.len() != self.m {
            return Err(CodecError::Shape(format!(
                "{} parity chunks given, codec has {}",
                parity.len(),
                self.m
            )));
        }
        let len = data[0].len();
        check_lengths(len, "data chunk", data.iter().copied())?;
        check_lengths(len, "parity chunk", parity.iter().map(|p| &**p))?;
        let rows: Vec<usize> = (0..self.m).collect();
        self.encode_rows(data, &rows, parity);
        Ok(())
    }

    /// Compute the parity rows `rows` (strictly increasing) into `dsts`,
    /// using the cheapest kernel primitive for P and Q. Shapes are checked
    /// by the caller.
    fn encode_rows(&self, data: &[&[u8]], rows: &[usize], dsts: &mut [&mut [u8]]) {
        debug_assert_eq!(rows.len(), dsts.len());
        let (done, rest_rows) = match (rows, &mut *dsts) {
            // Three or more rows: one matmul pass reads the data once (the
            // kernels compute leading P and Q rows as XOR and Horner inside
            // that pass); pq then matmul would read it twice.
            (r, _) if r.len() >= 3 => (0, rows),
            ([0, 1, ..], [p, q, ..]) => {
                (self.kernel.pq)(data, p, q);
                (2, &rows[2..])
            }
            ([0, ..], [p, ..]) => {
                (self.kernel.xor)(data, p);
                (1, &rows[1..])
            }
            _ => (0, rows),
        };
        if rest_rows.is_empty() {
            return;
        }
        let mut coeffs = Vec::with_capacity(rest_rows.len() * self.k);
        for &r in rest_rows {
            coeffs.extend_from_slice(self.matrix.row(r));
        }
        (self.kernel.matmul)(&coeffs, data, &mut dsts[done..], false);
    }

    /// `chunks` holds all `k + m` chunks (data first, then parity); those whose
    /// indices are in `missing` are recomputed from the others in one pass.
    ///
    /// Preconditions (else an error, nothing written): `chunks.len() == k + m`,
    /// every chunk the same length, `missing` holds at most `m` distinct
    /// indices below `k + m` in any order. The contents of the missing
    /// chunks on entry are ignored.
    pub fn reconstruct(
        &self,
        chunks: &mut [&mut [u8]],
        missing: &[usize],
    ) -> Result<(), CodecError> {
        let (k, m) = (self.k, self.m);
        let total = k + m;
        if chunks.len() != total {
            return Err(CodecError::Shape(format!(
                "{} chunks given, stripe has {total}",
                chunks.len()
            )));
        }
        check_lengths(chunks[0].len(), "chunk", chunks.iter().map(|c| &**c))?;
        // Missing set as a sorted list, validated.
        let mut lost: Vec<usize> = missing.to_vec();
        lost.sort_unstable();
        for w in lost.windows(2) {
            if w[0] == w[1] {
                return Err(CodecError::Shape(format!(
                    "chunk {} listed twice as missing",
                    w[0]
                )));
            }
        }
        if let Some(&last) = lost.last()
            && last >= total
        {
            return Err(CodecError::Index { index: last, total });
        }
        if lost.len() > m {
            return Err(CodecError::TooManyMissing {
                missing: lost.len(),
                parity: m,
            });
        }
        if lost.is_empty() {
            return Ok(());
        }
        let lost_data = lost.partition_point(|&i| i < k);
        let (missing_data, missing_parity) = lost.split_at(lost_data);

        // Split the chunks into read-only survivors and writable losses.
        let mut survivors: Vec<(usize, &[u8])> = Vec::with_capacity(total);
        let mut dsts: Vec<&mut [u8]> = Vec::with_capacity(lost.len());
        let mut next = lost.iter().peekable();
        for (i, c) in chunks.iter_mut().enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
                dsts.push(&mut **c);
            } else {
                survivors.push((i, &**c));
            }
        }

        if missing_data.is_empty() {
            // Only parity lost: re-encode just those rows from the data.
            let data: Vec<&[u8]> = survivors[..k].iter().map(|&(_, c)| c).collect();
            let rows: Vec<usize> = missing_parity.iter().map(|&i| i - k).collect();
            self.encode_rows(&data, &rows, &mut dsts);
            return Ok(());
        }
        if lost.len() == 1 {
            // One data chunk lost and P survives: it is the XOR of the rest.
            let srcs: Vec<&[u8]> = survivors[..k].iter().map(|&(_, c)| c).collect();
            (self.kernel.xor)(&srcs, &mut *dsts[0]);
            return Ok(());
        }

        // General case. Sources: surviving data S, then the first d surviving
        // parity rows R (survivors are in index order, data first).
        let d = missing_data.len();
        let srcs: Vec<&[u8]> = survivors[..k].iter().map(|&(_, c)| c).collect();
        let surviving_data: Vec<usize> = survivors[..k - d].iter().map(|&(i, _)| i).collect();
        let used_parity: Vec<usize> = survivors[k - d..k].iter().map(|&(i, _)| i - k).collect();

        let e = self
            .matrix
            .select(&used_parity, missing_data)
            .invert()
            .map_err(|err| CodecError::Shape(format!("decoding matrix: {err}")))?;
        // ers = E · A[R][S]  (d × (k - d))
        let ers = e
            .mul(&self.matrix.select(&used_parity, &surviving_data))
            .map_err(|err| CodecError::Shape(format!("decoding matrix: {err}")))?;

        // One row of k coefficients per lost chunk, in index order.
        let mut coeffs = vec![0u8; lost.len() * k];
        for (i, row) in coeffs.chunks_exact_mut(k).take(d).enumerate() {
            row[..k - d].copy_from_slice(ers.row(i));
            row[k - d..].copy_from_slice(e.row(i));
        }
        for (t, &p) in missing_parity.iter().enumerate() {
            let prow = p - k;
            let row = &mut coeffs[(d + t) * k..(d + t + 1) * k];
            for (s, &j) in surviving_data.iter().enumerate() {
                row[s] = self.matrix.get(prow, j);
            }
            // Add A[p][M_i] times the expression of D_{M_i}.
            for (i, &mi) in missing_data.iter().enumerate() {
                let f = self.matrix.get(prow, mi);
                let (ers_row, e_row) = (ers.row(i), e.row(i));
                for s in 0..k - d {
                    row[s] ^= crate::gf::mul(f, ers_row[s]);
                }
                for s in 0..d {
                    row[k - d + s] ^= crate::gf::mul(f, e_row[s]);
                }
            }
        }
        (self.kernel.matmul)(&coeffs, &srcs, &mut dsts, false);
        Ok(())
    }

    /// Read-modify-write: data chunk `index` changes from `old` to `new`;
    /// update all `m` parity chunks in place without the rest of the stripe.
    ///
    /// Preconditions (else an error, nothing written): `index < k`,
    /// `parity.len() == m`, `old`, `new` and every parity chunk the same
    /// length.
    pub fn update(
        &self,
        index: usize,
        old: &[u8],
        new: &[u8],
        parity: &mut [&mut [u8]],
    ) -> Result<(), CodecError> {
        if index >= self.k {
            return Err(CodecError::Index {
                index,
                total: self.k,
            });
        }
        if parity.len() != self.m {
            return Err(CodecError::Shape(format!(
                "{} parity chunks given, codec has {}",
                parity.len(),
                self.m
            )));
        }
        let len = old.len();
        check_lengths(len, "new data", [new])?;
        check_lengths(len, "parity chunk", parity.iter().map(|p| &**p))?;
        if self.m == 0 {
            return Ok(());
        }
        let mut coeffs = [0u8; 2 * MAX_PARITY];
        for r in 0..self.m {
            let c = self.matrix.get(r, index);
            coeffs[2 * r] = c;
            coeffs[2 * r + 1] = c;
        }
        (self.kernel.matmul)(&coeffs[..2 * self.m], &[old, new], parity, true);
        Ok(())
    }

    /// Scrub check: recompute the parity of `chunks` (all `k + m`, data
    /// first) and return the parity rows (0-based, `0..m`) whose stored
    /// chunk differs. Allocates `m` scratch chunks; see
    /// [`Codec::check_with_scratch`] to reuse buffers.
    ///
    /// Preconditions (else an error): `chunks.len() == k + m`, every chunk
    /// the same length.
    pub fn check(&self, chunks: &[&[u8]]) -> Result<Vec<usize>, CodecError> {
        let len = chunks.first().map_or(0, |c| c.len());
        let mut bufs = vec![vec![0u8; len]; self.m];
        let mut scratch: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        self.check_with_scratch(chunks, &mut scratch)
    }

    /// As [`Codec::check`], computing into caller-provided `scratch`
    /// (`m` buffers of the chunk length; their contents are overwritten).
    pub fn check_with_scratch(
        &self,
        chunks: &[&[u8]],
        scratch: &mut [&mut [u8]],
    ) -> Result<Vec<usize>, CodecError> {
        let total = self.k + self.m;
        if chunks.len() != total {
            return Err(CodecError::Shape(format!(
                "{} chunks given, stripe has {total}",
                chunks.len()
            )));
        }
        if scratch.len() != self.m {
            return Err(CodecError::Shape(format!(
                "{} scratch buffers given, need {}",
                scratch.len(),
                self.m
            )));
        }
        let len = chunks[0].len();
        check_lengths(len, "chunk", chunks.iter().copied())?;
        check_lengths(len, "scratch buffer", scratch.iter().map(|s| &**s))?;
        self.encode(&chunks[..self.k], scratch)?;
        Ok((0..self.m)
            .filter(|&r| *scratch[r] != *chunks[self.k + r])
            .collect())
    }
}
