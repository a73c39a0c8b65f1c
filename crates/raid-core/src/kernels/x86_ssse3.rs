//! Placeholder until the x86_ssse3 kernel lands: reports itself unsupported.

use super::Kernel;

pub static KERNEL: Kernel = Kernel { name: "x86_ssse3", xor: super::scalar::KERNEL.xor, pq: super::scalar::KERNEL.pq, matmul: super::scalar::KERNEL.matmul };

pub fn supported() -> bool {
    false
}
