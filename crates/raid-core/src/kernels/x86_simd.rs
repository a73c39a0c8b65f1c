//! Width-generic loops shared by the x86 kernels (SSSE3, AVX2, AVX-512BW,
//! GFNI): each kernel supplies a [`Simd`] type — its register width and a
//! handful of instructions — and instantiates these loops inside its own
//! `#[target_feature]` functions, so the same algorithm compiles to each
//! instruction set with every intrinsic inlined (the `memchr` crate's
//! scheme). Keeping the algorithms in one place means one place to get the
//! bounds right.
//!
//! The algorithms:
//! - `xor`: `U` registers per source per pass, sources folded two at a time
//!   with a three-input XOR where the ISA has one (`vpternlogq`).
//! - `pq`: Linux md's RAID-6 syndrome (`lib/raid6/avx2.c`, `avx512.c`):
//!   Horner's rule from the highest-numbered source down, `q = q·2 ^ d`,
//!   with `p ^= d` on the same loaded register.
//! - `matmul`: up to `R` output rows per pass, so each source register is
//!   loaded (and split into nibbles, for the `pshufb` kernels) once for all
//!   rows; the accumulators stay in registers for the whole pass and are
//!   stored once (the ISA-L `gf_Nvect_dot_prod` scheme).
//!
//! Bytes past the last whole register are finished here one byte at a time
//! with the portable formulas of [`super::scalar`] (branch-free, no
//! allocation), so every kernel is bit-identical to the scalar one for any
//! length and alignment.

#![allow(
    clippy::needless_range_loop,
    reason = "parallel register arrays indexed together read clearer by index"
)]

use crate::gf;

/// One SIMD register type and the instructions the loops need.
///
/// # Safety
/// The methods execute instructions of a particular extension without
/// checking for it. Implementors document which; the loops below may only
/// be instantiated inside functions compiled with (and run on CPUs that
/// have) those features.
pub(crate) unsafe trait Simd: Copy {
    /// Register width in bytes.
    const BYTES: usize;
    /// Whether [`Simd::mul_xor2`] is cheaper than two [`Simd::mul_xor`]s,
    /// so that `matmul` should consume sources in pairs.
    const PAIRS: bool;
    /// Whether `pq` and `matmul` write their rows with streaming stores
    /// (measured faster with 64-byte registers, slower with AVX2:
    /// docs/PERF-NOTES.md).
    const STREAM_PQ: bool;
    /// A source register prepared for multiplication by constants (its two
    /// nibbles for `pshufb`, the register itself for GFNI).
    type Split: Copy;
    /// A coefficient prepared for multiplication (two nibble tables, or a
    /// bit matrix).
    type Coef: Copy;

    /// # Safety
    /// `p` valid for reading `BYTES` bytes; any alignment.
    unsafe fn load(p: *const u8) -> Self;
    /// # Safety
    /// `p` valid for writing `BYTES` bytes; any alignment.
    unsafe fn store(p: *mut u8, v: Self);
    /// Non-temporal store, bypassing the caches.
    ///
    /// # Safety
    /// `p` valid for writing `BYTES` bytes and `BYTES`-aligned.
    unsafe fn stream(p: *mut u8, v: Self);
    /// # Safety
    /// The CPU has the features of the implementation.
    unsafe fn zero() -> Self;
    /// # Safety
    /// The CPU has the features of the implementation.
    unsafe fn xor(a: Self, b: Self) -> Self;
    /// `a ^ b ^ c`.
    ///
    /// # Safety
    /// The CPU has the features of the implementation.
    #[inline(always)]
    unsafe fn xor3(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: forwarded caller contract.
        unsafe { Self::xor(Self::xor(a, b), c) }
    }
    /// `q·2 ^ d` in GF(2⁸), bytewise.
    ///
    /// # Safety
    /// The CPU has the features of the implementation.
    unsafe fn mul2_xor(q: Self, d: Self) -> Self;
    /// # Safety
    /// The CPU has the features of the implementation.
    unsafe fn split(x: Self) -> Self::Split;
    /// # Safety
    /// The CPU has the features of the implementation.
    unsafe fn coef(c: u8) -> Self::Coef;
    /// `acc ^ c·x`.
    ///
    /// # Safety
    /// The CPU has the features of the implementation.
    unsafe fn mul_xor(acc: Self, x: Self::Split, c: Self::Coef) -> Self;
    /// `acc ^ c1·x1 ^ c2·x2`.
    ///
    /// # Safety
    /// The CPU has the features of the implementation.
    #[inline(always)]
    unsafe fn mul_xor2(
        acc: Self,
        x1: Self::Split,
        c1: Self::Coef,
        x2: Self::Split,
        c2: Self::Coef,
    ) -> Self {
        // SAFETY: forwarded caller contract.
        unsafe { Self::mul_xor(Self::mul_xor(acc, x1, c1), x2, c2) }
    }
}

/// Multiply one byte by 2 in GF(2⁸) without a branch.
#[inline(always)]
fn mul2_byte(b: u8) -> u8 {
    (b << 1) ^ ((((b as i8) >> 7) as u8) & 0x1d)
}

// ---------------------------------------------------------------- xor ----

/// Bytes from `ptr` to the next `BYTES` boundary.
#[inline(always)]
fn to_boundary<V: Simd>(ptr: *const u8) -> usize {
    (ptr as usize).wrapping_neg() % V::BYTES
}

/// Orders earlier streaming stores before any later store (`sfence`), so
/// that other threads see parity as if it had been stored normally.
#[inline(always)]
fn stream_fence() {
    // SAFETY: `sfence` is SSE, part of x86-64; it has no operands.
    unsafe { core::arch::x86_64::_mm_sfence() }
}

/// `dst = ⊕ srcs`, `U` registers per pass. Like Linux md and SnapRAID,
/// parity is written with streaming (non-temporal) stores: it is not read
/// again by the computation, and storing it around the caches saves
/// reading each destination line in first (docs/PERF-NOTES.md).
///
/// # Safety
/// The CPU has `V`'s features. `srcs` is non-empty and every source is at
/// least `dst.len()` bytes long.
#[inline(always)]
pub(crate) unsafe fn xor<V: Simd, const U: usize>(srcs: &[&[u8]], dst: &mut [u8]) {
    let len = dst.len();
    let d = dst.as_mut_ptr();
    // Bytes before the first register boundary of `dst`, one at a time.
    let head = to_boundary::<V>(d).min(len);
    xor_bytes(srcs, dst, 0, head);
    let mut i = head;
    while i + U * V::BYTES <= len {
        // SAFETY: bytes i..i + U·BYTES are in bounds of every buffer (loop
        // condition and the caller's length contract); `d + i` is aligned.
        unsafe { xor_block::<V, U>(srcs, d, i) };
        i += U * V::BYTES;
    }
    while i + V::BYTES <= len {
        // SAFETY: as above for one register.
        unsafe { xor_block::<V, 1>(srcs, d, i) };
        i += V::BYTES;
    }
    stream_fence();
    xor_bytes(srcs, dst, i, len);
}

/// Bytes `from..to` of `dst = ⊕ srcs`, one at a time (head and tail).
fn xor_bytes(srcs: &[&[u8]], dst: &mut [u8], from: usize, to: usize) {
    let t = &mut dst[from..to];
    t.copy_from_slice(&srcs[0][from..to]);
    for s in &srcs[1..] {
        t.iter_mut().zip(&s[from..to]).for_each(|(a, b)| *a ^= *b);
    }
}

/// # Safety
/// See [`xor`]; bytes `i..i + U·BYTES` are in bounds of every buffer and
/// `d + i` is `BYTES`-aligned.
#[inline(always)]
unsafe fn xor_block<V: Simd, const U: usize>(srcs: &[&[u8]], d: *mut u8, i: usize) {
    // SAFETY: in bounds per the contract; `V`'s features are present.
    unsafe {
        let mut a = [V::zero(); U];
        let first = srcs[0].as_ptr().add(i);
        for (u, a) in a.iter_mut().enumerate() {
            *a = V::load(first.add(u * V::BYTES));
        }
        let rest = &srcs[1..];
        let mut pairs = rest.chunks_exact(2);
        for pair in &mut pairs {
            let (s1, s2) = (pair[0].as_ptr().add(i), pair[1].as_ptr().add(i));
            for (u, a) in a.iter_mut().enumerate() {
                *a = V::xor3(
                    *a,
                    V::load(s1.add(u * V::BYTES)),
                    V::load(s2.add(u * V::BYTES)),
                );
            }
        }
        for s in pairs.remainder() {
            let s = s.as_ptr().add(i);
            for (u, a) in a.iter_mut().enumerate() {
                *a = V::xor(*a, V::load(s.add(u * V::BYTES)));
            }
        }
        for (u, a) in a.iter().enumerate() {
            V::stream(d.add(i + u * V::BYTES), *a);
        }
    }
}

// ----------------------------------------------------------------- pq ----

/// `p = ⊕ srcs[i]`, `q = ⊕ 2^i·srcs[i]`, `U` registers per pass; P and Q
/// are written with streaming stores when `V::STREAM_PQ` and they are
/// equally misaligned (as buffers from one allocator are), else with
/// ordinary ones.
///
/// # Safety
/// The CPU has `V`'s features. `srcs` is non-empty; every source and `q`
/// are at least `p.len()` bytes long.
#[inline(always)]
pub(crate) unsafe fn pq<V: Simd, const U: usize>(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
    let len = p.len();
    let (pp, qp) = (p.as_mut_ptr(), q.as_mut_ptr());
    let mut i = 0;
    let head = to_boundary::<V>(pp);
    if V::STREAM_PQ && head == to_boundary::<V>(qp) && head < len {
        pq_bytes(srcs, p, q, 0, head);
        i = head;
        while i + U * V::BYTES <= len {
            // SAFETY: bytes i..i + U·BYTES are in bounds of every buffer,
            // and `p + i`, `q + i` are register-aligned.
            unsafe { pq_block::<V, U, true>(srcs, pp, qp, i) };
            i += U * V::BYTES;
        }
        stream_fence();
    }
    while i + U * V::BYTES <= len {
        // SAFETY: bytes i..i + U·BYTES are in bounds of every buffer.
        unsafe { pq_block::<V, U, false>(srcs, pp, qp, i) };
        i += U * V::BYTES;
    }
    while i + V::BYTES <= len {
        // SAFETY: as above for one register.
        unsafe { pq_block::<V, 1, false>(srcs, pp, qp, i) };
        i += V::BYTES;
    }
    pq_bytes(srcs, p, q, i, len);
}

/// Bytes `from..to` of P and Q, one at a time (head and tail).
fn pq_bytes(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8], from: usize, to: usize) {
    let last = srcs.len() - 1;
    let (pt, qt) = (&mut p[from..to], &mut q[from..to]);
    pt.copy_from_slice(&srcs[last][from..to]);
    qt.copy_from_slice(&srcs[last][from..to]);
    for s in srcs[..last].iter().rev() {
        for ((a, b), x) in pt.iter_mut().zip(qt.iter_mut()).zip(&s[from..to]) {
            *a ^= *x;
            *b = mul2_byte(*b) ^ *x;
        }
    }
}

/// # Safety
/// See [`pq`]; bytes `i..i + U·BYTES` are in bounds of every buffer; with
/// `STREAM`, `p + i` and `q + i` are `BYTES`-aligned.
#[inline(always)]
unsafe fn pq_block<V: Simd, const U: usize, const STREAM: bool>(
    srcs: &[&[u8]],
    p: *mut u8,
    q: *mut u8,
    i: usize,
) {
    // SAFETY: in bounds (and aligned for streaming) per the contract; `V`'s
    // features are present.
    unsafe {
        let last = srcs.len() - 1;
        let mut wp = [V::zero(); U];
        let mut wq = [V::zero(); U];
        let top = srcs[last].as_ptr().add(i);
        for u in 0..U {
            wp[u] = V::load(top.add(u * V::BYTES));
            wq[u] = wp[u];
        }
        for s in srcs[..last].iter().rev() {
            let s = s.as_ptr().add(i);
            for u in 0..U {
                let d = V::load(s.add(u * V::BYTES));
                wp[u] = V::xor(wp[u], d);
                wq[u] = V::mul2_xor(wq[u], d);
            }
        }
        for u in 0..U {
            if STREAM {
                V::stream(p.add(i + u * V::BYTES), wp[u]);
                V::stream(q.add(i + u * V::BYTES), wq[u]);
            } else {
                V::store(p.add(i + u * V::BYTES), wp[u]);
                V::store(q.add(i + u * V::BYTES), wq[u]);
            }
        }
    }
}

// ------------------------------------------------------------- matmul ----

/// Leading rows of a group that are cheaper than general multiplication:
/// the encoding matrix starts with P (all ones: plain XOR) and Q (`2^j`:
/// Horner's rule, one multiply-by-2 per source), so a codec that hands all
/// parity rows to `matmul` gets P, Q and the Cauchy rows in one pass over
/// the data instead of one pass for P+Q and another for the rest.
const LEAD_NONE: u8 = 0;
/// Row 0 is all ones.
const LEAD_P: u8 = 1;
/// Row 0 is all ones and row 1 is `2^j` (and not accumulating: Horner's
/// rule would also multiply the old contents). Only kernels without
/// `Simd::PAIRS` use it; the others take such a Q row as a general one.
const LEAD_PQ: u8 = 2;

/// Which lead rows `cf` (`g` rows of `n` coefficients) starts with.
fn lead_rows(cf: &[u8], n: usize, g: usize, accumulate: bool) -> u8 {
    if !cf[..n].iter().all(|&c| c == 1) {
        return LEAD_NONE;
    }
    if !accumulate
        && g >= 2
        && cf[n..2 * n]
            .iter()
            .enumerate()
            .all(|(j, &c)| c == gf::pow2(j))
    {
        LEAD_PQ
    } else {
        LEAD_P
    }
}

/// `dsts[r] (^)= ⊕_j coeffs[r·n + j]·srcs[j]`, at most `R` rows per pass
/// over the sources (`R` ≤ 6), `U` registers per source per pass for up to
/// four rows and `UB` for five or six (fewer, so that the accumulators stay
/// in registers).
///
/// # Safety
/// The CPU has `V`'s features. `coeffs.len() == dsts.len() * srcs.len()`;
/// every source is at least as long as every destination, and all
/// destinations have the same length.
#[inline(always)]
pub(crate) unsafe fn matmul<V: Simd, const U: usize, const UB: usize, const R: usize>(
    coeffs: &[u8],
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
    accumulate: bool,
) {
    let n = srcs.len();
    if n == 0 {
        if !accumulate {
            dsts.iter_mut().for_each(|d| d.fill(0));
        }
        return;
    }
    for (g, rows) in dsts.chunks_mut(R).enumerate() {
        let cf = &coeffs[g * R * n..(g * R + rows.len()) * n];
        let mut lead = lead_rows(cf, n, rows.len(), accumulate);
        if V::PAIRS && lead == LEAD_PQ {
            // Where products are folded two at a time (`mul_xor2`), a Q row
            // as a general row costs one multiplication and half a
            // three-input XOR per source, Horner's rule one multiplication
            // and one XOR: 5–12 % faster for 4–6 rows, where the pass is
            // bound by vector instructions (docs/PERF-NOTES.md).
            lead = LEAD_P;
        }
        // SAFETY: forwarded contract; `cf` has rows.len() × n entries.
        unsafe {
            match (rows.len(), lead) {
                (1, LEAD_NONE) => rows_pass::<V, U, 1, LEAD_NONE>(cf, srcs, rows, accumulate),
                (1, _) => rows_pass::<V, U, 1, LEAD_P>(cf, srcs, rows, accumulate),
                (2, LEAD_NONE) => rows_pass::<V, U, 2, LEAD_NONE>(cf, srcs, rows, accumulate),
                (2, LEAD_P) => rows_pass::<V, U, 2, LEAD_P>(cf, srcs, rows, accumulate),
                (2, _) => rows_pass::<V, U, 2, LEAD_PQ>(cf, srcs, rows, accumulate),
                (3, LEAD_NONE) => rows_pass::<V, U, 3, LEAD_NONE>(cf, srcs, rows, accumulate),
                (3, LEAD_P) => rows_pass::<V, U, 3, LEAD_P>(cf, srcs, rows, accumulate),
                (3, _) => rows_pass::<V, U, 3, LEAD_PQ>(cf, srcs, rows, accumulate),
                (4, LEAD_NONE) => rows_pass::<V, U, 4, LEAD_NONE>(cf, srcs, rows, accumulate),
                (4, LEAD_P) => rows_pass::<V, U, 4, LEAD_P>(cf, srcs, rows, accumulate),
                (4, _) => rows_pass::<V, U, 4, LEAD_PQ>(cf, srcs, rows, accumulate),
                (5, LEAD_NONE) => rows_pass::<V, UB, 5, LEAD_NONE>(cf, srcs, rows, accumulate),
                (5, LEAD_P) => rows_pass::<V, UB, 5, LEAD_P>(cf, srcs, rows, accumulate),
                (5, _) => rows_pass::<V, UB, 5, LEAD_PQ>(cf, srcs, rows, accumulate),
                (_, LEAD_NONE) => rows_pass::<V, UB, 6, LEAD_NONE>(cf, srcs, rows, accumulate),
                (_, LEAD_P) => rows_pass::<V, UB, 6, LEAD_P>(cf, srcs, rows, accumulate),
                (_, _) => rows_pass::<V, UB, 6, LEAD_PQ>(cf, srcs, rows, accumulate),
            }
        }
    }
}

/// Bytes (sources plus rows) a `matmul` pass must touch before its rows
/// are written with streaming stores. Below it the rows stay in the caches
/// for the next pass and the reader (8 × 256 KiB sources with 4–6 rows:
/// 12–15 % faster with ordinary aligned stores); above it (8 × 4 MiB) the
/// rows would only be evicted to memory, and streaming stores avoid
/// reading every line of them first (3 rows: 20–32 GB/s against 12–20).
/// At 8 × 1 MiB the two were within the noise of each other.
const STREAM_MIN_FOOTPRINT: usize = 8 << 20;

/// One pass over the sources for exactly `G` destination rows, the first
/// `L` of them lead rows (see [`LEAD_P`], [`LEAD_PQ`]).
///
/// # Safety
/// As [`matmul`], with `rows.len() == G`, `cf.len() == G · srcs.len()`,
/// `srcs` non-empty and `L` what [`lead_rows`] found.
#[inline(always)]
unsafe fn rows_pass<V: Simd, const U: usize, const G: usize, const L: u8>(
    cf: &[u8],
    srcs: &[&[u8]],
    rows: &mut [&mut [u8]],
    accumulate: bool,
) {
    let len = rows[0].len();
    let mut d = [core::ptr::null_mut::<u8>(); G];
    for (d, row) in d.iter_mut().zip(rows.iter_mut()) {
        *d = row.as_mut_ptr();
    }
    let mut i = 0;
    // When every row is equally misaligned, the head is done byte-wise and
    // every register store after it is aligned: full-line stores, which
    // measured 12–15 % faster for 4–6 rows than stores straddling two
    // lines. Streaming stores only when the call's buffers exceed the
    // caches (see [`STREAM_MIN_FOOTPRINT`]).
    let head = to_boundary::<V>(d[0]);
    if !accumulate && head < len && d.iter().all(|&p| to_boundary::<V>(p) == head) {
        let stream = V::STREAM_PQ && (srcs.len() + G) * len >= STREAM_MIN_FOOTPRINT;
        if head > 0 && len >= V::BYTES {
            // The head as one unaligned register (overlapping the first
            // aligned one: rows are only written, so the bytes computed
            // twice get the same value twice) rather than byte by byte.
            // SAFETY: bytes 0..BYTES are in bounds of every buffer.
            unsafe { matmul_block::<V, 1, G, L>(cf, srcs, &d, 0, false, false) };
        } else {
            matmul_bytes(cf, srcs, rows, 0, head, accumulate);
        }
        i = head;
        while i + U * V::BYTES <= len {
            // SAFETY: bytes i..i + U·BYTES are in bounds of every buffer,
            // and every `d[r] + i` is register-aligned.
            unsafe { matmul_block::<V, U, G, L>(cf, srcs, &d, i, accumulate, stream) };
            i += U * V::BYTES;
        }
        if stream {
            stream_fence();
        }
    }
    while i + U * V::BYTES <= len {
        // SAFETY: bytes i..i + U·BYTES are in bounds of every buffer.
        unsafe { matmul_block::<V, U, G, L>(cf, srcs, &d, i, accumulate, false) };
        i += U * V::BYTES;
    }
    while i + V::BYTES <= len {
        // SAFETY: as above for one register.
        unsafe { matmul_block::<V, 1, G, L>(cf, srcs, &d, i, accumulate, false) };
        i += V::BYTES;
    }
    if !accumulate && i < len && len >= V::BYTES {
        // The tail as one register ending at `len`, overlapping the last
        // one (as the head above).
        // SAFETY: bytes len - BYTES..len are in bounds of every buffer.
        unsafe { matmul_block::<V, 1, G, L>(cf, srcs, &d, len - V::BYTES, false, false) };
    } else {
        matmul_bytes(cf, srcs, rows, i, len, accumulate);
    }
}

/// Bytes `from..to` of every row, one at a time (head and tail).
fn matmul_bytes(
    cf: &[u8],
    srcs: &[&[u8]],
    rows: &mut [&mut [u8]],
    from: usize,
    to: usize,
    accumulate: bool,
) {
    let n = srcs.len();
    for (r, row) in rows.iter_mut().enumerate() {
        let t = &mut row[from..to];
        if !accumulate {
            t.fill(0);
        }
        for (j, s) in srcs.iter().enumerate() {
            let c = cf[r * n + j] as usize;
            let (lo, hi) = (&gf::MUL_LO[c], &gf::MUL_HI[c]);
            for (a, x) in t.iter_mut().zip(&s[from..to]) {
                *a ^= lo[(x & 15) as usize] ^ hi[(x >> 4) as usize];
            }
        }
    }
}

/// `U` registers of every destination row at offset `i`. Sources are
/// consumed from the last to the first, as Horner's rule for a Q lead row
/// needs (the order does not matter to the other rows).
///
/// # Safety
/// See [`rows_pass`]; bytes `i..i + U·BYTES` are in bounds of every buffer;
/// with `stream`, every `d[r] + i` is `BYTES`-aligned.
#[inline(always)]
unsafe fn matmul_block<V: Simd, const U: usize, const G: usize, const L: u8>(
    cf: &[u8],
    srcs: &[&[u8]],
    d: &[*mut u8; G],
    i: usize,
    accumulate: bool,
    stream: bool,
) {
    let n = srcs.len();
    let lead = L as usize;
    // SAFETY: in bounds per the contract (coefficient indices are below
    // G·n = cf.len()); `V`'s features are present.
    unsafe {
        let mut acc = [[V::zero(); U]; G];
        if accumulate {
            for r in 0..G {
                for u in 0..U {
                    acc[r][u] = V::load(d[r].add(i + u * V::BYTES));
                }
            }
        }
        let mut j = n;
        if V::PAIRS {
            while j >= 2 {
                let (s1, s2) = (srcs[j - 1].as_ptr().add(i), srcs[j - 2].as_ptr().add(i));
                let mut x1 = [V::zero(); U];
                let mut x2 = [V::zero(); U];
                for u in 0..U {
                    x1[u] = V::load(s1.add(u * V::BYTES));
                    x2[u] = V::load(s2.add(u * V::BYTES));
                }
                if L >= LEAD_P {
                    for u in 0..U {
                        acc[0][u] = V::xor3(acc[0][u], x1[u], x2[u]);
                    }
                }
                if L >= LEAD_PQ {
                    for u in 0..U {
                        acc[1][u] = V::mul2_xor(V::mul2_xor(acc[1][u], x1[u]), x2[u]);
                    }
                }
                for r in lead..G {
                    let c1 = V::coef(*cf.get_unchecked(r * n + j - 1));
                    let c2 = V::coef(*cf.get_unchecked(r * n + j - 2));
                    for u in 0..U {
                        acc[r][u] =
                            V::mul_xor2(acc[r][u], V::split(x1[u]), c1, V::split(x2[u]), c2);
                    }
                }
                j -= 2;
            }
        }
        while j > 0 {
            j -= 1;
            let s = srcs[j].as_ptr().add(i);
            let mut x = [V::zero(); U];
            for u in 0..U {
                x[u] = V::load(s.add(u * V::BYTES));
            }
            if L >= LEAD_P {
                for u in 0..U {
                    acc[0][u] = V::xor(acc[0][u], x[u]);
                }
            }
            if L >= LEAD_PQ {
                for u in 0..U {
                    acc[1][u] = V::mul2_xor(acc[1][u], x[u]);
                }
            }
            if lead < G {
                let mut y = [V::split(V::zero()); U];
                for u in 0..U {
                    y[u] = V::split(x[u]);
                }
                for r in lead..G {
                    let c = V::coef(*cf.get_unchecked(r * n + j));
                    for u in 0..U {
                        acc[r][u] = V::mul_xor(acc[r][u], y[u], c);
                    }
                }
            }
        }
        for r in 0..G {
            for u in 0..U {
                if stream {
                    V::stream(d[r].add(i + u * V::BYTES), acc[r][u]);
                } else {
                    V::store(d[r].add(i + u * V::BYTES), acc[r][u]);
                }
            }
        }
    }
}

/// Shared unit test of an x86 kernel against [`super::scalar`]: odd
/// lengths, unaligned buffers, several source and row counts, coefficients
/// including 0 and 1, with and without `accumulate`.
#[cfg(test)]
pub(crate) fn check_against_scalar(k: &super::Kernel) {
    use super::scalar::KERNEL as S;

    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    };
    const LENS: &[usize] = &[
        0, 1, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 255, 256, 257, 511, 1000, 4099,
    ];
    for &n in &[1usize, 2, 3, 5, 8, 11] {
        for &len in LENS {
            // Each source starts at a different offset from a 64-byte boundary.
            let stride = len + 128;
            let pool: Vec<u8> = (0..stride * n).map(|_| next()).collect();
            let srcs: Vec<&[u8]> = (0..n)
                .map(|j| {
                    let off = j * stride + (j * 7 + 3) % 64;
                    &pool[off..off + len]
                })
                .collect();
            let ctx = format!("{} sources of {len} bytes", n);

            let mut big = vec![0u8; 3 * len + 9];
            let (want, rest) = big.split_at_mut(len);
            let got = &mut rest[1..len + 1];
            (S.xor)(&srcs, want);
            (k.xor)(&srcs, got);
            assert_eq!(want, got, "{}: xor, {ctx}", k.name);

            let (mut wp, mut wq) = (vec![0u8; len], vec![0u8; len]);
            let mut gbuf = vec![0u8; 2 * len + 5];
            let (gp, gq) = gbuf[3..].split_at_mut(len);
            (S.pq)(&srcs, &mut wp, &mut wq);
            (k.pq)(&srcs, gp, &mut gq[..len]);
            assert_eq!(wp, gp, "{}: pq p, {ctx}", k.name);
            assert_eq!(wq, &gq[..len], "{}: pq q, {ctx}", k.name);

            // Coefficient shapes: arbitrary (with 0s and 1s); a P row (all
            // ones) first; P then Q (2^j) first, as the encoding matrix.
            let shapes = [1usize, 2, 3, 4, 6, 7]
                .into_iter()
                .flat_map(|rows| (0..3).map(move |lead| (rows, lead)));
            for (rows, lead) in shapes {
                let mut coeffs: Vec<u8> = (0..rows * n)
                    .map(|i| match i % 5 {
                        0 => 0,
                        1 => 1,
                        _ => next(),
                    })
                    .collect();
                if lead >= 1 {
                    coeffs[..n].fill(1);
                }
                if lead >= 2 && rows >= 2 {
                    for j in 0..n {
                        coeffs[n + j] = crate::gf::pow2(j);
                    }
                }
                for accumulate in [false, true] {
                    let mut want: Vec<Vec<u8>> = (0..rows)
                        .map(|_| (0..len).map(|_| next()).collect())
                        .collect();
                    // Destinations one byte past an allocation's start, same contents.
                    let mut got: Vec<Vec<u8>> =
                        want.iter().map(|w| [&[0u8][..], w].concat()).collect();
                    {
                        let mut w: Vec<&mut [u8]> = want.iter_mut().map(|c| &mut c[..]).collect();
                        (S.matmul)(&coeffs, &srcs, &mut w, accumulate);
                    }
                    {
                        let mut g: Vec<&mut [u8]> = got.iter_mut().map(|c| &mut c[1..]).collect();
                        (k.matmul)(&coeffs, &srcs, &mut g, accumulate);
                    }
                    for r in 0..rows {
                        assert_eq!(
                            want[r],
                            got[r][1..],
                            "{}: matmul row {r} of {rows}, accumulate {accumulate}, {ctx}",
                            k.name
                        );
                    }
                }
                // Rows carved from one allocation 64·k bytes apart are all
                // equally misaligned: the case written with streaming stores.
                let mut want: Vec<Vec<u8>> = vec![vec![0u8; len]; rows];
                {
                    let mut w: Vec<&mut [u8]> = want.iter_mut().map(|c| &mut c[..]).collect();
                    (S.matmul)(&coeffs, &srcs, &mut w, false);
                }
                let stride = (len + 64) / 64 * 64;
                let mut pool = vec![0xa5u8; rows * stride + 5];
                let mut g: Vec<&mut [u8]> = pool[5..]
                    .chunks_mut(stride)
                    .map(|c| &mut c[..len])
                    .collect();
                (k.matmul)(&coeffs, &srcs, &mut g, false);
                for r in 0..rows {
                    assert_eq!(
                        want[r], g[r],
                        "{}: matmul row {r} of {rows}, co-aligned rows, {ctx}",
                        k.name
                    );
                }
            }
        }
    }
}

/// Rows large enough to be written with streaming stores (a footprint of
/// at least [`STREAM_MIN_FOOTPRINT`]) must match the scalar kernel too,
/// for the full encoding matrix shape (P, Q, Cauchy rows) and general rows,
/// with equally misaligned rows and an odd length.
#[cfg(test)]
pub(crate) fn check_streaming_rows(k: &super::Kernel) {
    use super::scalar::KERNEL as S;

    let (n, rows) = (8usize, 3usize);
    let len = STREAM_MIN_FOOTPRINT / (n + rows) + 77;
    let mut x: u32 = 0x9e37_79b9;
    let pool: Vec<u8> = (0..n * len + 64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 7) as u8
        })
        .collect();
    let srcs: Vec<&[u8]> = (0..n)
        .map(|j| &pool[3 + j * len..3 + (j + 1) * len])
        .collect();
    for lead in [0, 2] {
        let mut coeffs: Vec<u8> = (0..rows * n).map(|i| (i * 37 + 11) as u8).collect();
        if lead == 2 {
            coeffs[..n].fill(1);
            for j in 0..n {
                coeffs[n + j] = crate::gf::pow2(j);
            }
        }
        let mut want: Vec<Vec<u8>> = vec![vec![0u8; len]; rows];
        {
            let mut w: Vec<&mut [u8]> = want.iter_mut().map(|c| &mut c[..]).collect();
            (S.matmul)(&coeffs, &srcs, &mut w, false);
        }
        let stride = (len + 64) / 64 * 64;
        let mut out = vec![0x5au8; rows * stride + 9];
        let mut g: Vec<&mut [u8]> = out[9..].chunks_mut(stride).map(|c| &mut c[..len]).collect();
        (k.matmul)(&coeffs, &srcs, &mut g, false);
        for r in 0..rows {
            assert!(
                want[r] == g[r],
                "{}: streamed matmul row {r}, lead rows {lead}",
                k.name
            );
        }
    }
}

/// The safe entry points of one x86 kernel, the same for every ISA but its
/// feature list: shape checks, the scalar fallback when the CPU lacks the
/// features, and the `#[target_feature]` shims over this module's generic
/// algorithms. The calling module defines `supported()`, the register type
/// `V` and the unroll constants `U`, `UM`, `UM_WIDE`, `R`, and imports
/// `assert_lengths`, `scalar` and `simd`.
macro_rules! entry_points {
    ($features:literal) => {
        fn xor(srcs: &[&[u8]], dst: &mut [u8]) {
            assert!(!srcs.is_empty(), "xor needs at least one source");
            assert_lengths(dst.len(), srcs, &[]);
            if !supported() {
                return (scalar::KERNEL.xor)(srcs, dst);
            }
            // SAFETY: the CPU has the features (checked just above) and every
            // source is as long as `dst` (asserted).
            unsafe { xor_simd(srcs, dst) }
        }

        fn pq(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
            assert!(!srcs.is_empty(), "pq needs at least one source");
            assert!(q.len() == p.len(), "pq: q length mismatch");
            assert_lengths(p.len(), srcs, &[]);
            if !supported() {
                return (scalar::KERNEL.pq)(srcs, p, q);
            }
            // SAFETY: the CPU has the features (checked just above); every source
            // and `q` are as long as `p` (asserted).
            unsafe { pq_simd(srcs, p, q) }
        }

        fn matmul(coeffs: &[u8], srcs: &[&[u8]], dsts: &mut [&mut [u8]], accumulate: bool) {
            assert!(
                coeffs.len() == srcs.len() * dsts.len(),
                "matmul: coefficient count mismatch"
            );
            let len = dsts.first().map_or(0, |d| d.len());
            assert_lengths(len, srcs, dsts);
            if !supported() {
                return (scalar::KERNEL.matmul)(coeffs, srcs, dsts, accumulate);
            }
            // SAFETY: the CPU has the features (checked just above); the
            // coefficient count and all lengths are asserted equal.
            unsafe { matmul_simd(coeffs, srcs, dsts, accumulate) }
        }

        /// # Safety
        #[doc = concat!("The CPU has ", $features, "; as [`simd::xor`].")]
        #[target_feature(enable = $features)]
        unsafe fn xor_simd(srcs: &[&[u8]], dst: &mut [u8]) {
            // SAFETY: forwarded contract; `V` only needs the enabled features.
            unsafe { simd::xor::<V, U>(srcs, dst) }
        }

        /// # Safety
        #[doc = concat!("The CPU has ", $features, "; as [`simd::pq`].")]
        #[target_feature(enable = $features)]
        unsafe fn pq_simd(srcs: &[&[u8]], p: &mut [u8], q: &mut [u8]) {
            // SAFETY: forwarded contract; `V` only needs the enabled features.
            unsafe { simd::pq::<V, U>(srcs, p, q) }
        }

        /// # Safety
        #[doc = concat!("The CPU has ", $features, "; as [`simd::matmul`].")]
        #[target_feature(enable = $features)]
        unsafe fn matmul_simd(
            coeffs: &[u8],
            srcs: &[&[u8]],
            dsts: &mut [&mut [u8]],
            accumulate: bool,
        ) {
            // SAFETY: forwarded contract; `V` only needs the enabled features.
            unsafe { simd::matmul::<V, UM, UM_WIDE, R>(coeffs, srcs, dsts, accumulate) }
        }
    };
}
pub(crate) use entry_points;
