//! Guest accesses the host MMU must decide: one function resolves a memory fault on
//! every platform, whichever MMU it runs ([`resolve`]); on the emulated platforms an
//! access that hit a closed view is then completed on guest RAM ([`access`]).

use super::RunError;
use crate::mmu::Access;
use crate::platform::{Platform, Stop};
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::layout::PAGE_SIZE_4K;

/// A guest access to `gpa` (as KVM reports it: with the platform's view bit) that
/// found its view closed: the host MMU maps the page, converts it, or names the rule
/// the access breaks. `Ok(None)`: the page is reachable now.
pub fn resolve<P: Platform + ?Sized>(
    platform: &mut P,
    gpa: u64,
) -> Result<Option<Stop>, MemoryError> {
    let (view, ram_gpa) = platform.view_of(gpa);
    let strict = platform.strict_memory();
    let access = platform.mmu().access(
        platform.memory(),
        ram_gpa / PAGE_SIZE_4K,
        view.kind(),
        strict,
    )?;
    Ok(match access {
        Access::Ok { .. } => None,
        Access::Violation(rule) => Some(Stop::MemoryViolation {
            gpa: ram_gpa,
            view,
            rule,
        }),
    })
}

/// An MMIO exit on the emulated platforms: a guest access that hit a `PROT_NONE` view.
/// Resolved as a memory fault, then, if the page is reachable now (a fault that mapped
/// it, or a stale mapping), `complete`d on guest RAM as the guest meant it.
pub fn access(
    platform: &mut dyn Platform,
    gpa: u64,
    complete: impl FnOnce(&GuestMemory, u64) -> Result<(), MemoryError>,
) -> Result<Option<Stop>, RunError> {
    platform.run_counters().exit("npf");
    if let Some(stop) = platform.memory_fault(gpa)? {
        return Ok(Some(stop));
    }
    let (_, ram_gpa) = platform.view_of(gpa);
    complete(platform.memory(), ram_gpa)?;
    Ok(None)
}
