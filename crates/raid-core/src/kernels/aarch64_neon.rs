//! Placeholder until the aarch64_neon kernel lands: reports itself unsupported.

use super::Kernel;

pub static KERNEL: Kernel = Kernel { name: "aarch64_neon", xor: super::scalar::KERNEL.xor, pq: super::scalar::KERNEL.pq, matmul: super::scalar::KERNEL.matmul };

pub fn supported() -> bool {
    false
}
