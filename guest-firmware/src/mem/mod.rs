//! Guest memory: page tables, the frame allocator with lazy acceptance and the
//! firmware's own per-4 KiB record of what it validated, and the app's address space.

pub mod frames;
pub mod paging;
pub mod user;

use core::sync::atomic::{AtomicU64, Ordering};
use nacre_shared_abi::layout::{DIRECT_MAP_VA_BASE, KERNEL_VA_BASE};

/// Base added to a GPA to reach it: the loader's map before our page tables are
/// live, the direct map afterwards.
static PHYS_BASE: AtomicU64 = AtomicU64::new(KERNEL_VA_BASE);

/// Virtual address of private guest-physical address `gpa`.
pub fn phys_to_virt(gpa: u64) -> u64 {
    PHYS_BASE.load(Ordering::Relaxed) + gpa
}

/// Switch [`phys_to_virt`] to the direct map (after CR3 points at our tables).
pub fn use_direct_map() {
    PHYS_BASE.store(DIRECT_MAP_VA_BASE, Ordering::Relaxed);
}
