//! Arithmetic in GF(2⁸) with the polynomial x⁸ + x⁴ + x³ + x² + 1 (0x11d) and
//! generator 2: the field Linux md RAID-6 uses, so that P and Q computed here
//! are bit-identical to the kernel's (H. Peter Anvin, "The mathematics of
//! RAID-6", 2011).
//!
//! Addition is XOR. Multiplication goes through log/exp tables; the SIMD
//! kernels use the derived per-coefficient tables below (split-nibble lookup
//! tables for `pshufb`/`tbl`, and 8×8 bit matrices for GFNI `gf2p8affine`).
//! Every table is computed by a `const fn` at compile time, never typed in, and
//! tested against bitwise (carry-less, reduced) multiplication.

/// The reduction polynomial, with the x⁸ term.
pub const POLY: u16 = 0x11d;

/// Carry-less multiplication reduced modulo [`POLY`], one bit at a time.
///
/// The slow, obviously-correct definition every table is checked against.
pub const fn mul_bitwise(a: u8, b: u8) -> u8 {
    let mut a = a as u16;
    let mut b = b;
    let mut r: u16 = 0;
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        a <<= 1;
        if a & 0x100 != 0 {
            a ^= POLY;
        }
        b >>= 1;
    }
    r as u8
}

const fn build_exp() -> [u8; 512] {
    let mut t = [0u8; 512];
    let mut x: u8 = 1;
    let mut i = 0;
    while i < 512 {
        t[i] = x;
        x = mul_bitwise(x, 2);
        i += 1;
    }
    t
}

const fn build_log() -> [u8; 256] {
    let exp = build_exp();
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 255 {
        t[exp[i] as usize] = i as u8;
        i += 1;
    }
    t
}

/// `EXP[i] = 2^i`, doubled in length so that `EXP[LOG[a] + LOG[b]]` needs no
/// reduction modulo 255.
pub static EXP: [u8; 512] = build_exp();

/// `LOG[2^i] = i` for non-zero arguments; `LOG[0]` is unused (0).
pub static LOG: [u8; 256] = build_log();

/// Product of `a` and `b`.
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

/// Multiplicative inverse of `a`.
///
/// # Panics
/// If `a == 0`, which has no inverse; callers only invert entries they know
/// to be non-zero (matrix pivots).
#[inline]
pub fn inv(a: u8) -> u8 {
    assert!(a != 0, "zero has no inverse in GF(2^8)");
    EXP[255 - LOG[a as usize] as usize]
}

/// `a / b`. Panics if `b == 0`.
#[inline]
pub fn div(a: u8, b: u8) -> u8 {
    mul(a, inv(b))
}

/// `2^e` for any exponent (reduced modulo 255, the order of the group).
#[inline]
pub fn pow2(e: usize) -> u8 {
    EXP[e % 255]
}

const fn build_nibble(high: bool) -> [[u8; 16]; 256] {
    let mut t = [[0u8; 16]; 256];
    let mut c = 0;
    while c < 256 {
        let mut n = 0;
        while n < 16 {
            let x = if high { (n << 4) as u8 } else { n as u8 };
            t[c][n] = mul_bitwise(c as u8, x);
            n += 1;
        }
        c += 1;
    }
    t
}

/// `MUL_LO[c][n] = c · n` for the low nibble `n`: with [`MUL_HI`], the
/// 16-entry tables a byte shuffle (`pshufb`, `vqtbl1q_u8`) needs to multiply
/// by the constant `c`: `c·x = MUL_LO[c][x & 15] ^ MUL_HI[c][x >> 4]`.
pub static MUL_LO: [[u8; 16]; 256] = build_nibble(false);

/// `MUL_HI[c][n] = c · (n << 4)`; see [`MUL_LO`].
pub static MUL_HI: [[u8; 16]; 256] = build_nibble(true);

const fn build_gfni() -> [u64; 256] {
    // gf2p8affine computes, for output bit i, parity(A.byte[7 - i] & x).
    // Multiplication by c is linear over GF(2): output bit i of c·x is the
    // XOR over input bits j of bit i of c·2^j. So byte 7-i of A has bit j set
    // exactly when bit i of c·2^j is set.
    let mut t = [0u64; 256];
    let mut c = 0;
    while c < 256 {
        let mut m: u64 = 0;
        let mut i = 0;
        while i < 8 {
            let mut row: u64 = 0;
            let mut j = 0;
            while j < 8 {
                let col = mul_bitwise(c as u8, 1u8 << j);
                if (col >> i) & 1 != 0 {
                    row |= 1 << j;
                }
                j += 1;
            }
            m |= row << (8 * (7 - i));
            i += 1;
        }
        t[c] = m;
        c += 1;
    }
    t
}

/// `GFNI_MATRIX[c]`: the 8×8 bit matrix operand of `gf2p8affine_epi64_epi8`
/// that multiplies each byte by `c` in this field (GFNI's own `gf2p8mul`
/// uses the AES polynomial 0x11b and cannot be used).
pub static GFNI_MATRIX: [u64; 256] = build_gfni();

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference for `gf2p8affine_epi64_epi8(x, A, 0)` on one byte.
    fn affine(a: u64, x: u8) -> u8 {
        let mut r = 0u8;
        for i in 0..8 {
            let row = (a >> (8 * (7 - i))) as u8;
            r |= (((row & x).count_ones() & 1) as u8) << i;
        }
        r
    }

    #[test]
    fn tables_match_bitwise_multiplication() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let want = mul_bitwise(a, b);
                assert_eq!(mul(a, b), want, "{a}*{b}");
                assert_eq!(
                    MUL_LO[a as usize][(b & 15) as usize] ^ MUL_HI[a as usize][(b >> 4) as usize],
                    want
                );
                assert_eq!(affine(GFNI_MATRIX[a as usize], b), want, "gfni {a}*{b}");
            }
        }
    }

    #[test]
    fn generator_has_full_order_and_inverses_hold() {
        let mut seen = [false; 256];
        for e in 0..255 {
            let x = pow2(e);
            assert!(!seen[x as usize], "2 is not a generator");
            seen[x as usize] = true;
        }
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1);
            assert_eq!(div(a, a), 1);
            assert_eq!(EXP[LOG[a as usize] as usize], a);
        }
    }
}
