//! Placeholder until the x86_avx512 kernel lands: reports itself unsupported.

use super::Kernel;

pub static KERNEL: Kernel = Kernel { name: "x86_avx512", xor: super::scalar::KERNEL.xor, pq: super::scalar::KERNEL.pq, matmul: super::scalar::KERNEL.matmul };

pub fn supported() -> bool {
    false
}
