//! Guest memory: page tables, the frame allocator with lazy acceptance and the
//! firmware's own per-4 KiB record of what it validated, and the app's address space.

pub mod frames;
pub mod paging;
pub mod user;

#[cfg(not(any(test, feature = "fuzzing")))]
use core::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(any(test, feature = "fuzzing")))]
use nacre_shared_abi::layout::{DIRECT_MAP_VA_BASE, KERNEL_VA_BASE};

/// Base added to a GPA to reach it: the loader's map before our page tables are
/// live, the direct map afterwards.
#[cfg(not(any(test, feature = "fuzzing")))]
static PHYS_BASE: AtomicU64 = AtomicU64::new(KERNEL_VA_BASE);

/// Virtual address of private guest-physical address `gpa`.
#[cfg(not(any(test, feature = "fuzzing")))]
pub fn phys_to_virt(gpa: u64) -> u64 {
    PHYS_BASE.load(Ordering::Relaxed) + gpa
}

/// Switch [`phys_to_virt`] to the direct map (after CR3 points at our tables).
#[cfg(not(any(test, feature = "fuzzing")))]
pub fn use_direct_map() {
    PHYS_BASE.store(DIRECT_MAP_VA_BASE, Ordering::Relaxed);
}

// Host unit tests give each test thread its own "guest RAM", an ordinary buffer that
// `phys_to_virt` reaches (`crate::testing::FakeRam`).
#[cfg(any(test, feature = "fuzzing"))]
std::thread_local! {
    static PHYS_BASE: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Virtual address of private guest-physical address `gpa`: in a test's fake RAM.
#[cfg(any(test, feature = "fuzzing"))]
pub fn phys_to_virt(gpa: u64) -> u64 {
    PHYS_BASE.with(|b| b.get()) + gpa
}

/// Point [`phys_to_virt`] at a test's fake RAM (`base` is where GPA 0 is).
#[cfg(any(test, feature = "fuzzing"))]
pub fn set_test_phys_base(base: u64) {
    PHYS_BASE.with(|b| b.set(base));
}

/// Tests keep their fake RAM: there is no direct map to switch to.
#[cfg(any(test, feature = "fuzzing"))]
pub fn use_direct_map() {}
