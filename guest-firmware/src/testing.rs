//! Fakes for the host unit tests: guest RAM as an ordinary buffer that
//! [`crate::mem::phys_to_virt`] reaches, page-table frames taken from it, and a
//! platform that records what it is asked and answers as configured. Nothing here
//! executes a privileged instruction.

use crate::error::FwError;
use crate::mem::paging::{PageTables, TableAlloc};
use crate::platform::hostcall::HostcallArea;
use crate::platform::{
    Backend, Evidence, GuestDevice, GuestPlatform, GuestReport, PageState, PteMasks, ReportError,
    Validation,
};
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::snp::rmp::RmpError;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::vec::Vec;

/// Guest RAM of a test: `len` zeroed bytes at GPA 0, reached through `phys_to_virt`
/// on the test's thread for as long as the value lives.
#[derive(Debug)]
pub struct FakeRam {
    base: *mut u8,
    layout: Layout,
}

impl FakeRam {
    /// `len` bytes of zeroed RAM (lazily backed by the host, so tens of MiB are cheap).
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 1 << 21).expect("a valid test RAM size");
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null(), "the test RAM could not be allocated");
        crate::mem::set_test_phys_base(base as u64);
        Self { base, layout }
    }

    /// Bytes of RAM.
    pub fn size(&self) -> u64 {
        self.layout.size() as u64
    }

    /// The bytes at `[gpa, gpa + len)`.
    pub fn bytes(&self, gpa: u64, len: usize) -> &[u8] {
        assert!(gpa as usize + len <= self.layout.size());
        // SAFETY: the range lies inside the allocation, which lives as long as `self`.
        unsafe { core::slice::from_raw_parts(self.base.add(gpa as usize), len) }
    }

    /// Fill `[gpa, gpa + len)` with `byte`.
    pub fn fill(&mut self, gpa: u64, byte: u8, len: usize) {
        assert!(gpa as usize + len <= self.layout.size());
        // SAFETY: as in `bytes`.
        unsafe { core::ptr::write_bytes(self.base.add(gpa as usize), byte, len) };
    }
}

impl Drop for FakeRam {
    fn drop(&mut self) {
        crate::mem::set_test_phys_base(0);
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base, self.layout) };
    }
}

/// Page-table frames handed out upwards from a GPA of fake RAM.
#[derive(Debug)]
pub struct BumpTables {
    /// The next frame.
    pub next: u64,
    /// The end of the pool.
    pub end: u64,
}

impl TableAlloc for BumpTables {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let gpa = self.next;
        self.next += PAGE_SIZE_4K;
        Some(gpa)
    }
}

/// Empty page tables whose root is the first frame of `pool`.
pub fn page_tables(pool: &mut BumpTables, masks: PteMasks) -> PageTables {
    let root = pool.alloc_table().expect("the pool has a root frame");
    PageTables::new(root, masks.private, masks.shared)
}

/// What a [`FakePlatform`] was asked, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    PageState {
        gpa: u64,
        len: u64,
        state: PageState,
        allow_2m: bool,
    },
    Validate4k(u64),
    Validate2m(u64),
    Ring(u64),
}

/// A platform whose validation answers are configured per page.
#[derive(Debug, Default)]
pub struct FakePlatform {
    /// Everything asked, in order.
    pub calls: Vec<Call>,
    /// 2 MiB pages that answer with a size mismatch.
    pub mismatch_2m: Vec<u64>,
    /// Pages (4 KiB or the start of a 2 MiB one) that answer "already validated".
    pub already: Vec<u64>,
    /// Pages whose validation fails.
    pub failing: Vec<u64>,
    /// Whether fresh memory reads as zeros.
    pub fresh_zero: bool,
    /// Whether memory goes private with a page-state change before validation (as on
    /// SEV-SNP).
    pub psc_first: bool,
}

impl FakePlatform {
    /// How many validations of each size were asked: (4 KiB, 2 MiB).
    pub fn validations(&self) -> (usize, usize) {
        let four_k = self
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Validate4k(_)))
            .count();
        let two_m = self
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Validate2m(_)))
            .count();
        (four_k, two_m)
    }

    fn answer(&self, gpa: u64) -> Result<(), FwError> {
        if self.already.contains(&gpa) {
            return Err(FwError::AlreadyValidated { gpa });
        }
        if self.failing.contains(&gpa) {
            return Err(FwError::Pvalidate {
                gpa,
                rc: Some(RmpError::FailInput),
            });
        }
        Ok(())
    }
}

impl GuestPlatform for FakePlatform {
    fn backend(&self) -> Backend {
        Backend::Doorbell
    }

    fn pte_masks(&self) -> PteMasks {
        PteMasks {
            private: 0,
            shared: 0,
        }
    }

    fn ram_limit(&self) -> u64 {
        u64::MAX
    }

    fn launch_pages(&self) -> &'static [(u64, u64)] {
        &[]
    }

    fn fresh_memory_is_zero(&self) -> bool {
        self.fresh_zero
    }

    fn guest_device(&self) -> GuestDevice {
        GuestDevice::SevGuest
    }

    fn prepare_tables(
        &mut self,
        _pt: &mut PageTables,
        _alloc: &mut dyn TableAlloc,
    ) -> Result<(), FwError> {
        Ok(())
    }

    fn setup(&mut self, _pt: &mut PageTables, _cpus: u32) -> Result<(), FwError> {
        Ok(())
    }

    fn rescinded_pages(&self) -> (u64, u64) {
        (0, 0)
    }

    fn page_state_change(
        &mut self,
        gpa: u64,
        len: u64,
        state: PageState,
        allow_2m: bool,
    ) -> Result<(), FwError> {
        self.calls.push(Call::PageState {
            gpa,
            len,
            state,
            allow_2m,
        });
        Ok(())
    }

    unsafe fn validate_4k(&mut self, gpa: u64) -> Result<(), FwError> {
        self.calls.push(Call::Validate4k(gpa));
        self.answer(gpa)
    }

    unsafe fn validate_2m(&mut self, gpa: u64) -> Result<Validation, FwError> {
        self.calls.push(Call::Validate2m(gpa));
        self.answer(gpa)?;
        if self.mismatch_2m.contains(&gpa) {
            return Ok(Validation::SizeMismatch);
        }
        Ok(Validation::Done)
    }

    unsafe fn accept_range(
        &mut self,
        gpa: u64,
        len: u64,
        four_k_only: bool,
    ) -> Result<u64, FwError> {
        if self.psc_first {
            self.page_state_change(gpa, len, PageState::Private, !four_k_only)?;
        }
        // SAFETY: nothing is validated: the fake only records the calls.
        unsafe { self.validate_range(gpa, len, four_k_only) }
    }

    fn ring_hostcall(&mut self, page: u64) -> Result<(), FwError> {
        self.calls.push(Call::Ring(page));
        Ok(())
    }

    fn guest_report(
        &mut self,
        report_data: &[u8; 64],
        _vmpl: u32,
        _io: &HostcallArea,
    ) -> Result<GuestReport, ReportError> {
        Ok(GuestReport::new(report_data))
    }

    fn evidence(
        &mut self,
        _report_data: &[u8; 64],
        _io: &mut HostcallArea,
    ) -> Result<Evidence, FwError> {
        Err(FwError::Attestation { code: 0 })
    }

    fn evidence_poll(&mut self, _io: &mut HostcallArea) -> Result<Evidence, FwError> {
        Err(FwError::Attestation { code: 0 })
    }

    fn terminate(&self, code: u8) -> ! {
        panic!("the fake platform was asked to terminate with {code}")
    }
}
