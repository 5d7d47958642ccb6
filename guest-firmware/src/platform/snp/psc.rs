//! Guest side of page-state changes through the GHCB (NAE 0x8000_0010): descriptors
//! of up to 253 entries, 2 MiB entries where aligned (unless the image asks for 4 KiB
//! work), resumed on partial progress, with the host's progress checked to only move
//! forward (Linux `vmgexit_psc`; SPECS.md 2.2).
//!
//! The descriptor is built directly in the private GHCB copy's shared buffer and only
//! its used part (header and entries) crosses to the shared page: a whole buffer is
//! 254 quadwords each way, which costs milliseconds where ring 0 is emulated.

use super::ghcb::GhcbCall;
use crate::error::FwError;
use nacre_shared_abi::snp::ghcb::{exit_code, GhcbField};
use nacre_shared_abi::snp::psc::{PageStateOp, PscEntry, PscHeader, PSC_MAX_ENTRIES};
use zerocopy::{FromBytes, IntoBytes};

/// Bytes of the descriptor header.
const HEADER_LEN: usize = 8;

/// Change the state of `npages` 4 KiB pages from `gfn`; with `allow_2m`, aligned runs
/// of 512 pages go as one 2 MiB entry.
pub fn page_state_change<G: GhcbCall + ?Sized>(
    ghcb: &mut G,
    mut gfn: u64,
    mut npages: u64,
    op: PageStateOp,
    allow_2m: bool,
) -> Result<(), FwError> {
    while npages > 0 {
        let (first, before) = (gfn, npages);
        let mut n = 0usize;
        let g = ghcb.request();
        while n < PSC_MAX_ENTRIES && npages > 0 {
            let e = entry(gfn, npages, op, allow_2m);
            let at = HEADER_LEN + 8 * n;
            g.shared_buffer[at..at + 8].copy_from_slice(&e.encode().to_le_bytes());
            n += 1;
            gfn += e.npages();
            npages -= e.npages();
        }
        let header = PscHeader {
            cur_entry: 0,
            end_entry: (n - 1) as u16,
            reserved: 0,
        };
        g.shared_buffer[..HEADER_LEN].copy_from_slice(header.as_bytes());
        run_desc(ghcb, first, before - npages, n, op, allow_2m)?;
    }
    Ok(())
}

/// The entry for the next pages from `gfn` (`left` of them).
fn entry(gfn: u64, left: u64, op: PageStateOp, allow_2m: bool) -> PscEntry {
    PscEntry {
        cur_page: 0,
        gfn,
        op,
        huge: allow_2m && gfn.is_multiple_of(512) && left >= 512,
    }
}

fn bad(gfn: u64, detail: u64) -> FwError {
    FwError::PageStateChange { gfn, detail }
}

/// Run the `n`-entry descriptor for `pages` pages from `first` (built in the private
/// GHCB copy's shared buffer) until the host reports it complete.
fn run_desc<G: GhcbCall + ?Sized>(
    ghcb: &mut G,
    first: u64,
    pages: u64,
    n: usize,
    op: PageStateOp,
    allow_2m: bool,
) -> Result<(), FwError> {
    let len = HEADER_LEN + 8 * n;
    let end_entry = (n - 1) as u16;
    let mut last_progress = 0u64;
    loop {
        let scratch = ghcb.ghcb_gpa() + 0x800;
        let g = ghcb.request();
        g.sw_scratch = scratch;
        g.set_valid(GhcbField::SwScratch);
        g.set_exit(exit_code::PSC, 0, 0);
        ghcb.call(len)?;
        let g = ghcb.answer();
        if g.sw_exit_info_2 != 0 {
            return Err(bad(first, g.sw_exit_info_2));
        }
        let buf = &g.shared_buffer[..len];
        let h = PscHeader::read_from_bytes(&buf[..HEADER_LEN]).map_err(|_| bad(first, 3))?;
        if h.reserved != 0 || h.end_entry != end_entry {
            return Err(bad(first, 4));
        }
        // The host may only move cur_entry and each entry's cur_page; everything else
        // must be as written (each entry recomputed from the same inputs).
        let mut done = 0u64;
        let mut gfn = first;
        let mut left = pages;
        for raw in buf[HEADER_LEN..].chunks_exact(8) {
            let mut q = [0u8; 8];
            q.copy_from_slice(raw);
            let e = PscEntry::decode(u64::from_le_bytes(q)).map_err(|_| bad(first, 1))?;
            let want = entry(gfn, left, op, allow_2m);
            if e.gfn != want.gfn || e.op != want.op || e.huge != want.huge {
                return Err(bad(first, 2));
            }
            done += u64::from(e.cur_page);
            gfn += e.npages();
            left = left.saturating_sub(e.npages());
        }
        if h.cur_entry > h.end_entry {
            return Ok(());
        }
        // Partial progress is allowed; no progress (or going backwards) is not.
        let progress = done + u64::from(h.cur_entry);
        if progress <= last_progress {
            return Err(bad(first, 5));
        }
        last_progress = progress;
    }
}
