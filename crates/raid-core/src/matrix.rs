//! The encoding matrix and matrix inversion over GF(2⁸).
//!
//! # The code
//!
//! A stripe holds `k` data chunks `D_0..D_{k-1}` and `m` parity chunks
//! `P_0..P_{m-1}`, each parity a linear combination of the data, byte by
//! byte: `P_i = ⊕_j A[i][j] · D_j`. The full generator matrix is `[I; A]`
//! (systematic: the data is stored as is), and the code can recover any `m`
//! lost chunks exactly when every square submatrix of `A` is non-singular
//! (the MDS property): losing data `M` and keeping parity rows `R` leaves the
//! system `A[R][M] · D_M = P_R ⊕ A[R][S] · D_S`, solvable iff `A[R][M]`
//! inverts.
//!
//! # The matrix
//!
//! `A` is an *extended generalized Cauchy matrix* (Roth and Lempel):
//!
//! - points `y_j = 2^(−j)` for the columns `j = 0..k` (`k ≤ 251`, so the
//!   `y_j` are `2^0` and `2^5..2^254`, all distinct and non-zero);
//! - row 0 (P) is the *row at infinity*: all ones, plain XOR, as RAID-5;
//! - row 1 (Q) uses `x_1 = 0`: `A[1][j] = 1 / (0 + y_j) = 2^j`, which is
//!   exactly Linux md RAID-6's `Q = ⊕ 2^j · D_j` (Anvin);
//! - rows 2..5 use `x_i = 2^1, 2^2, 2^3, 2^4`, the four non-zero elements
//!   that are not among the `y_j`, with `A[i][j] = c_i / (x_i + y_j)` and
//!   `c_i = x_i + y_0 = x_i + 1`, which normalises column 0 to ones (scaling
//!   a row multiplies every minor through that row by a non-zero constant,
//!   so it keeps the MDS property).
//!
//! Since all `x_i` are distinct, all `y_j` are distinct and no `x_i` equals
//! a `y_j`, every square submatrix of the Cauchy part `1/(x_i + y_j)` has a
//! non-zero (Cauchy) determinant; for a square submatrix that includes the
//! row of ones (Roth–Lempel's point at infinity), subtracting its first
//! column `j₀` from the others and expanding along the ones row leaves
//! `Π_j (y_j₀ + y_j) · Π_i (x_i + y_j₀)⁻¹` times a Cauchy determinant one
//! size smaller: again non-zero. Hence every
//! square submatrix of `A`, for every `m ≤ 6` and `k ≤ 251`, inverts.
//! `tests/invertibility.rs` checks the closed form and verifies the claim
//! by computation (all 1×1, 2×2 and 3×3 submatrices over all 251 columns,
//! larger ones over a prefix of the columns).
//!
//! The limit `k ≤ 251` is the size of the field: 256 elements minus the
//! five `x` points (0, 2, 4, 8, 16) leaves 251 for the `y` points.
//!
//! Nothing here is a typed-in table: [`encoding`] computes the matrix from
//! [`x_point`], [`y_point`] and [`row_scale`], which the test suite checks.
//!
//! # References
//!
//! - H. Peter Anvin, "The mathematics of RAID-6", 2011 (field, P and Q,
//!   two-failure recovery).
//! - R. M. Roth and A. Lempel, "On MDS codes via Cauchy matrices", IEEE
//!   Trans. Inf. Theory 35(6), 1989 (generalized and extended Cauchy
//!   matrices are superregular).
//! - J. Blömer et al., "An XOR-based erasure-resilient coding scheme", ICSI
//!   TR-95-048, 1995; J. S. Plank and L. Xu, "Optimizing Cauchy Reed-Solomon
//!   codes for fault-tolerant network storage applications", NCA 2006.
//! - A. Mazzoleni, SnapRAID `raid/raid.c` (notes on extending RAID-6 with
//!   Cauchy rows so that P and Q stay md-compatible).

use crate::gf;

/// Most parity rows the construction provides.
pub const MAX_ROWS: usize = 6;
/// Most data columns the construction provides.
pub const MAX_COLS: usize = 251;

/// Errors of matrix construction and inversion.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatrixError {
    /// The shape asked for is outside what the construction supports, or
    /// operands do not fit together.
    #[error("invalid matrix shape: {0}")]
    Shape(String),
    /// The matrix has no inverse (a zero pivot column was found).
    #[error("matrix is singular")]
    Singular,
}

/// A dense row-major matrix over GF(2⁸).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl Matrix {
    /// The `rows × cols` zero matrix.
    pub fn zero(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0; rows * cols],
        }
    }

    /// The `n × n` identity.
    pub fn identity(n: usize) -> Self {
        let mut a = Self::zero(n, n);
        for i in 0..n {
            a.set(i, i, 1);
        }
        a
    }

    /// A matrix from row-major bytes; `data.len()` must be `rows × cols`.
    pub fn from_rows(rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, MatrixError> {
        if data.len() != rows * cols {
            return Err(MatrixError::Shape(format!(
                "{} bytes for a {rows}x{cols} matrix",
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Entry `(r, c)`. Panics if out of range (a programming error).
    #[inline]
    pub fn get(&self, r: usize, c: usize) -> u8 {
        assert!(r < self.rows && c < self.cols, "matrix index out of range");
        self.data[r * self.cols + c]
    }

    /// Set entry `(r, c)`. Panics if out of range (a programming error).
    #[inline]
    pub fn set(&mut self, r: usize, c: usize, v: u8) {
        assert!(r < self.rows && c < self.cols, "matrix index out of range");
        self.data[r * self.cols + c] = v;
    }

    /// Row `r` as a slice.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// All entries, row-major: the coefficient layout of
    /// [`crate::kernels::MatmulFn`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The submatrix of the given rows and columns, in the order given.
    /// Panics if an index is out of range (a programming error).
    pub fn select(&self, rows: &[usize], cols: &[usize]) -> Matrix {
        let mut s = Matrix::zero(rows.len(), cols.len());
        for (i, &r) in rows.iter().enumerate() {
            for (j, &c) in cols.iter().enumerate() {
                s.set(i, j, self.get(r, c));
            }
        }
        s
    }

    /// Matrix product `self · other`.
    pub fn mul(&self, other: &Matrix) -> Result<Matrix, MatrixError> {
        if self.cols != other.rows {
            return Err(MatrixError::Shape(format!(
                "cannot multiply {}x{} by {}x{}",
                self.rows, self.cols, other.rows, other.cols
            )));
        }
        let mut p = Matrix::zero(self.rows, other.cols);
        for i in 0..self.rows {
            for j in 0..other.cols {
                let mut acc = 0u8;
                for t in 0..self.cols {
                    acc ^= gf::mul(self.get(i, t), other.get(t, j));
                }
                p.set(i, j, acc);
            }
        }
        Ok(p)
    }

    /// The inverse, by Gauss–Jordan elimination with row pivoting.
    ///
    /// Returns [`MatrixError::Shape`] for a non-square matrix and
    /// [`MatrixError::Singular`] when no inverse exists. O(n³) field
    /// operations; the codec only inverts matrices of at most 6×6.
    pub fn invert(&self) -> Result<Matrix, MatrixError> {
        if self.rows != self.cols {
            return Err(MatrixError::Shape(format!(
                "cannot invert a {}x{} matrix",
                self.rows, self.cols
            )));
        }
        let n = self.rows;
        let mut a = self.clone();
        let mut inv = Matrix::identity(n);
        for col in 0..n {
            // Find a row at or below the diagonal with a non-zero entry.
            let pivot = (col..n)
                .find(|&r| a.get(r, col) != 0)
                .ok_or(MatrixError::Singular)?;
            if pivot != col {
                a.swap_rows(pivot, col);
                inv.swap_rows(pivot, col);
            }
            // Scale the pivot row so the pivot becomes 1.
            let s = gf::inv(a.get(col, col));
            a.scale_row(col, s);
            inv.scale_row(col, s);
            // Eliminate the column from every other row (subtraction is XOR).
            for r in 0..n {
                if r != col {
                    let f = a.get(r, col);
                    if f != 0 {
                        a.add_scaled_row(r, col, f);
                        inv.add_scaled_row(r, col, f);
                    }
                }
            }
        }
        Ok(inv)
    }

    fn swap_rows(&mut self, a: usize, b: usize) {
        for c in 0..self.cols {
            self.data.swap(a * self.cols + c, b * self.cols + c);
        }
    }

    fn scale_row(&mut self, r: usize, s: u8) {
        for v in &mut self.data[r * self.cols..(r + 1) * self.cols] {
            *v = gf::mul(*v, s);
        }
    }

    /// `row[dst] ^= f · row[src]`.
    fn add_scaled_row(&mut self, dst: usize, src: usize, f: u8) {
        for c in 0..self.cols {
            let v = gf::mul(self.data[src * self.cols + c], f);
            self.data[dst * self.cols + c] ^= v;
        }
    }
}

/// The Cauchy point `x_i` of parity row `row`; `None` for row 0, the row at
/// infinity (P, all ones). Row 1 (Q) has `x_1 = 0`, rows 2..5 have
/// `x = 2^(row-1)`.
pub fn x_point(row: usize) -> Option<u8> {
    match row {
        0 => None,
        1 => Some(0),
        r => Some(gf::pow2(r - 1)),
    }
}

/// The Cauchy point `y_j = 2^(−j)` of data column `col`.
pub fn y_point(col: usize) -> u8 {
    gf::pow2((255 - col % 255) % 255)
}

/// The row scale `c_i`: 1 for P and Q, `x_i + y_0` for the Cauchy rows so
/// that their first entry is 1.
pub fn row_scale(row: usize) -> u8 {
    match x_point(row) {
        None | Some(0) => 1,
        Some(x) => x ^ y_point(0),
    }
}

/// Entry `A[row][col]` of the encoding matrix, from the closed form.
pub fn entry(row: usize, col: usize) -> u8 {
    match x_point(row) {
        None => 1,
        Some(x) => gf::div(row_scale(row), x ^ y_point(col)),
    }
}

/// The `m × k` encoding matrix: row 0 P (XOR), row 1 Q (`2^j`, Linux md),
/// rows 2.. extended Cauchy. Every square submatrix is invertible.
///
/// Errors if `m > 6` or `k` is not in `1..=251`.
pub fn encoding(m: usize, k: usize) -> Result<Matrix, MatrixError> {
    if m > MAX_ROWS {
        return Err(MatrixError::Shape(format!(
            "{m} parity rows, at most {MAX_ROWS} supported"
        )));
    }
    if k == 0 || k > MAX_COLS {
        return Err(MatrixError::Shape(format!(
            "{k} data columns, must be 1..={MAX_COLS}"
        )));
    }
    let mut a = Matrix::zero(m, k);
    for r in 0..m {
        for c in 0..k {
            a.set(r, c, entry(r, c));
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_is_ones_and_q_is_md_powers_of_two() {
        let a = encoding(6, MAX_COLS).unwrap();
        for j in 0..MAX_COLS {
            assert_eq!(a.get(0, j), 1);
            assert_eq!(a.get(1, j), gf::pow2(j), "Q column {j}");
        }
        for r in 2..6 {
            assert_eq!(
                a.get(r, 0),
                1,
                "Cauchy rows are normalised to 1 in column 0"
            );
        }
    }

    #[test]
    fn points_are_distinct_and_disjoint() {
        let mut seen = [false; 256];
        for r in 1..MAX_ROWS {
            let x = x_point(r).unwrap() as usize;
            assert!(!seen[x]);
            seen[x] = true;
        }
        for j in 0..MAX_COLS {
            let y = y_point(j) as usize;
            assert!(!seen[y], "y_{j} collides");
            seen[y] = true;
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(encoding(7, 4).is_err());
        assert!(encoding(2, 0).is_err());
        assert!(encoding(2, 252).is_err());
        assert!(encoding(0, 1).is_ok());
    }

    #[test]
    fn inverse_times_matrix_is_identity() {
        let a = encoding(6, 6).unwrap();
        let inv = a.invert().unwrap();
        assert_eq!(inv.mul(&a).unwrap(), Matrix::identity(6));
        assert_eq!(a.mul(&inv).unwrap(), Matrix::identity(6));
        let s = encoding(6, 200).unwrap().select(&[1, 3, 5], &[7, 100, 199]);
        assert_eq!(s.invert().unwrap().mul(&s).unwrap(), Matrix::identity(3));
    }

    #[test]
    fn singular_and_non_square_are_errors() {
        let s = Matrix::from_rows(2, 2, vec![1, 2, 1, 2]).unwrap();
        assert_eq!(s.invert(), Err(MatrixError::Singular));
        let z = Matrix::zero(3, 3);
        assert_eq!(z.invert(), Err(MatrixError::Singular));
        assert!(matches!(
            Matrix::zero(2, 3).invert(),
            Err(MatrixError::Shape(_))
        ));
        assert!(Matrix::from_rows(2, 2, vec![1]).is_err());
    }

    #[test]
    fn needs_row_swaps() {
        // Zero in the top-left corner forces a pivot swap.
        let a = Matrix::from_rows(2, 2, vec![0, 1, 1, 0]).unwrap();
        assert_eq!(a.invert().unwrap(), a);
    }
}
