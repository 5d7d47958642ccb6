//! The host MMU of the hardware platforms: KVM's. nacre keeps only the per-page
//! attributes the guest asked for, and applies every change to KVM with
//! `KVM_SET_MEMORY_ATTRIBUTES`; KVM zaps its page tables, and the guest_memfd and the
//! hardware (RMP, Secure EPT) do the rest (`virt/kvm/kvm_main.c`,
//! `kvm_vm_ioctl_set_mem_attributes`; `virt/kvm/guest_memfd.c`).
//!
//! A conversion also returns the side the page leaves to the host: to shared, the
//! private copy in the guest_memfd is punched out (as other VMMs do; KVM would keep it
//! allocated otherwise); to private, the shared copy in the memfd is discarded, so that
//! nothing the guest shared lingers where it no longer looks.

use crate::mmu::attributes::{Attributes, Kind};
use crate::mmu::{rule, Access, HypervisorMmu};
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Where the attribute changes take effect: KVM and the guest_memfd, or a test's
/// record.
pub trait AttributeSink: Send + Sync + std::fmt::Debug {
    /// `KVM_SET_MEMORY_ATTRIBUTES` over `[gpa, gpa + size)`: private or shared.
    fn set_attributes(&self, gpa: u64, size: u64, private: bool) -> io::Result<()>;
    /// Free the private copy of `[gpa, gpa + size)` (punch a hole in the guest_memfd).
    fn discard_private(&self, gpa: u64, size: u64) -> io::Result<()>;
}

/// Counters of the KVM MMU (`kvm.*`).
#[derive(Debug, Default)]
struct Counters {
    to_private: AtomicU64,
    to_shared: AtomicU64,
    set_attributes: AtomicU64,
    implicit: AtomicU64,
}

/// The attributes of guest RAM, kept in sync with KVM's.
#[derive(Debug)]
pub struct KvmMmu {
    attributes: Mutex<Attributes>,
    sink: Box<dyn AttributeSink>,
    counters: Counters,
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> MemoryError {
    move |source| MemoryError::Sys { what, source }
}

impl KvmMmu {
    /// The MMU of `pages` pages of RAM, all private (as the launch leaves them), whose
    /// changes go to `sink`.
    pub fn new(pages: u64, sink: Box<dyn AttributeSink>) -> Self {
        Self {
            attributes: Mutex::new(Attributes::new(pages, Kind::Private)),
            sink,
            counters: Counters::default(),
        }
    }

    fn attributes(&self) -> std::sync::MutexGuard<'_, Attributes> {
        // A poisoned lock means a panic elsewhere, which aborts (panic = "abort").
        self.attributes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl HypervisorMmu for KvmMmu {
    fn pages(&self) -> u64 {
        self.attributes().pages()
    }

    /// A `KVM_EXIT_MEMORY_FAULT`: the guest accessed `gfn` as `kind` while its
    /// attribute is the other. Converted (as KVM lets a VMM do), or with `strict`
    /// refused.
    fn access(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        kind: Kind,
        strict: bool,
    ) -> Result<Access, MemoryError> {
        let current = self.attributes().get(gfn);
        match current {
            None => Ok(Access::Violation(rule::OUT_OF_RANGE)),
            // The attribute changed since the fault: KVM_RUN again resolves it.
            Some(k) if k == kind => Ok(Access::Ok { converted: false }),
            Some(_) if strict => Ok(Access::Violation(match kind {
                Kind::Private => rule::PRIVATE_TO_SHARED,
                Kind::Shared => rule::SHARED_TO_PRIVATE,
            })),
            Some(_) => {
                self.convert(mem, gfn, 1, kind)?;
                self.count_implicit_conversion();
                Ok(Access::Ok { converted: true })
            }
        }
    }

    fn convert(
        &self,
        mem: &GuestMemory,
        gfn: u64,
        n: u64,
        kind: Kind,
    ) -> Result<Option<u64>, MemoryError> {
        let mut attributes = self.attributes();
        if gfn
            .checked_add(n)
            .is_none_or(|end| end > attributes.pages())
        {
            return Ok(None);
        }
        let changed = attributes.count_other(gfn, n, kind);
        if changed == 0 {
            return Ok(Some(0));
        }
        let (gpa, size) = (gfn * PAGE_SIZE_4K, n * PAGE_SIZE_4K);
        self.sink
            .set_attributes(gpa, size, kind == Kind::Private)
            .map_err(sys("KVM_SET_MEMORY_ATTRIBUTES"))?;
        self.counters.set_attributes.fetch_add(1, Ordering::Relaxed);
        attributes.set(gfn, n, kind);
        match kind {
            Kind::Shared => {
                self.counters
                    .to_shared
                    .fetch_add(changed, Ordering::Relaxed);
                self.sink
                    .discard_private(gpa, size)
                    .map_err(sys("fallocate(PUNCH_HOLE) of the guest_memfd"))?;
            }
            Kind::Private => {
                self.counters
                    .to_private
                    .fetch_add(changed, Ordering::Relaxed);
                mem.discard(gpa, size)?;
            }
        }
        Ok(Some(changed))
    }

    fn is_shared(&self, gfn: u64, n: u64) -> bool {
        self.attributes().uniform(gfn, n, Kind::Shared)
    }

    /// KVM maps a page for the kind of its attribute, and only for that kind.
    fn reachable(&self, gfn: u64) -> (bool, bool) {
        match self.attributes().get(gfn) {
            Some(Kind::Private) => (true, false),
            Some(Kind::Shared) => (false, true),
            None => (false, false),
        }
    }

    fn count_implicit_conversion(&self) {
        self.counters.implicit.fetch_add(1, Ordering::Relaxed);
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            (
                "kvm.set_memory_attributes",
                c.set_attributes.load(Ordering::Relaxed),
            ),
            ("memory.to_private", c.to_private.load(Ordering::Relaxed)),
            ("memory.to_shared", c.to_shared.load(Ordering::Relaxed)),
            (
                "memory.implicit_conversions",
                c.implicit.load(Ordering::Relaxed),
            ),
        ]
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An [`AttributeSink`] that records what it was asked.
    #[derive(Debug, Default, Clone)]
    pub struct RecordingSink {
        /// `(gpa, size, private)` of every `KVM_SET_MEMORY_ATTRIBUTES`.
        pub set: std::sync::Arc<Mutex<Vec<(u64, u64, bool)>>>,
        /// `(gpa, size)` of every hole punched in the guest_memfd.
        pub punched: std::sync::Arc<Mutex<Vec<(u64, u64)>>>,
    }

    impl AttributeSink for RecordingSink {
        fn set_attributes(&self, gpa: u64, size: u64, private: bool) -> io::Result<()> {
            self.set.lock().unwrap().push((gpa, size, private));
            Ok(())
        }
        fn discard_private(&self, gpa: u64, size: u64) -> io::Result<()> {
            self.punched.lock().unwrap().push((gpa, size));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::RecordingSink;
    use super::*;

    fn mmu(pages: u64) -> (KvmMmu, RecordingSink, GuestMemory) {
        let sink = RecordingSink::default();
        let mem = GuestMemory::new(pages * PAGE_SIZE_4K).unwrap();
        (KvmMmu::new(pages, Box::new(sink.clone())), sink, mem)
    }

    #[test]
    fn conversions_reach_kvm_once_and_free_the_side_left() {
        let (mmu, sink, mem) = mmu(1024);
        assert!(!mmu.is_shared(16, 4));
        assert_eq!(mmu.convert(&mem, 16, 4, Kind::Shared).unwrap(), Some(4));
        assert!(mmu.is_shared(16, 4));
        // Converting again to the same kind asks nothing of KVM.
        assert_eq!(mmu.convert(&mem, 16, 4, Kind::Shared).unwrap(), Some(0));
        mem.write(16 * 4096, b"shared data").unwrap();
        assert_eq!(mmu.convert(&mem, 16, 2, Kind::Private).unwrap(), Some(2));
        let mut b = [0u8; 11];
        mem.read(16 * 4096, &mut b).unwrap();
        assert_eq!(b, [0; 11], "the shared copy is discarded");
        assert_eq!(
            *sink.set.lock().unwrap(),
            vec![(0x10_000, 0x4000, false), (0x10_000, 0x2000, true)]
        );
        assert_eq!(*sink.punched.lock().unwrap(), vec![(0x10_000, 0x4000)]);
        assert_eq!(mmu.reachable(16), (true, false));
        assert_eq!(mmu.reachable(18), (false, true));
    }

    #[test]
    fn ranges_outside_ram_are_refused_without_asking_kvm() {
        let (mmu, sink, mem) = mmu(64);
        assert_eq!(mmu.convert(&mem, 60, 8, Kind::Shared).unwrap(), None);
        assert_eq!(mmu.convert(&mem, u64::MAX, 2, Kind::Shared).unwrap(), None);
        assert!(sink.set.lock().unwrap().is_empty());
        assert_eq!(
            mmu.access(&mem, 64, Kind::Shared, false).unwrap(),
            Access::Violation(rule::OUT_OF_RANGE)
        );
    }

    #[test]
    fn memory_faults_convert_unless_strict() {
        let (mmu, _, mem) = mmu(64);
        assert_eq!(
            mmu.access(&mem, 3, Kind::Shared, true).unwrap(),
            Access::Violation(rule::SHARED_TO_PRIVATE)
        );
        assert_eq!(
            mmu.access(&mem, 3, Kind::Shared, false).unwrap(),
            Access::Ok { converted: true }
        );
        assert_eq!(
            mmu.access(&mem, 3, Kind::Shared, false).unwrap(),
            Access::Ok { converted: false }
        );
        assert_eq!(
            mmu.access(&mem, 3, Kind::Private, true).unwrap(),
            Access::Violation(rule::PRIVATE_TO_SHARED)
        );
        let counters = mmu.counters();
        assert!(counters.contains(&("memory.implicit_conversions", 1)));
        assert!(counters.contains(&("memory.to_shared", 1)));
    }
}
