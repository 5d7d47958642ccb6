//! Guest side of page-state changes through the GHCB (NAE 0x8000_0010): descriptors
//! of up to 253 entries, 2 MiB entries where aligned, resumed on partial progress,
//! with the host's progress checked to only move forward (Linux `vmgexit_psc`;
//! SPECS.md 2.2).

use super::Snp;
use crate::error::FwError;
use nacre_shared_abi::snp::ghcb::{exit_code, GhcbField};
use nacre_shared_abi::snp::psc::{PageStateOp, PscDesc, PscEntry, PscHeader, PSC_MAX_ENTRIES};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Change the state of `npages` 4 KiB pages from `gfn`.
pub fn page_state_change(
    snp: &mut Snp,
    mut gfn: u64,
    mut npages: u64,
    op: PageStateOp,
) -> Result<(), FwError> {
    while npages > 0 {
        let mut desc = PscDesc::new_zeroed();
        let mut n = 0usize;
        while n < PSC_MAX_ENTRIES && npages > 0 {
            let huge = gfn.is_multiple_of(512) && npages >= 512;
            let e = PscEntry {
                cur_page: 0,
                gfn,
                op,
                huge,
            };
            desc.entries[n] = e.encode();
            n += 1;
            gfn += e.npages();
            npages -= e.npages();
        }
        desc.header = PscHeader {
            cur_entry: 0,
            end_entry: (n - 1) as u16,
            reserved: 0,
        };
        run_desc(snp, &desc)?;
    }
    Ok(())
}

/// Pages already done in a descriptor, as the guest counts progress.
fn progress(desc: &PscDesc, original: &PscDesc) -> Result<u64, FwError> {
    let mut done = 0u64;
    for i in 0..=usize::from(original.header.end_entry) {
        let e = PscEntry::decode(desc.entries[i]).map_err(|_| bad(original, 1))?;
        let o = PscEntry::decode(original.entries[i]).map_err(|_| bad(original, 1))?;
        // The host may only move cur_page; everything else must be as we wrote it.
        if e.gfn != o.gfn || e.op != o.op || e.huge != o.huge {
            return Err(bad(original, 2));
        }
        done += u64::from(e.cur_page);
    }
    Ok(done)
}

fn bad(desc: &PscDesc, detail: u64) -> FwError {
    FwError::PageStateChange {
        gfn: desc.entries[0] >> 12 & ((1 << 40) - 1),
        detail,
    }
}

fn run_desc(snp: &mut Snp, original: &PscDesc) -> Result<(), FwError> {
    let mut desc = original.clone();
    let mut last_progress = 0u64;
    loop {
        let scratch = snp.ghcb_gpa() + 0x800;
        let g = snp.request();
        g.shared_buffer.copy_from_slice(desc.as_bytes());
        g.sw_scratch = scratch;
        g.set_valid(GhcbField::SwScratch);
        g.set_exit(exit_code::PSC, 0, 0);
        snp.call_request(true)?;
        let g = snp.answer();
        if g.sw_exit_info_2 != 0 {
            return Err(bad(original, g.sw_exit_info_2));
        }
        desc = PscDesc::read_from_bytes(&g.shared_buffer).map_err(|_| bad(original, 3))?;
        let h = desc.header;
        if h.reserved != 0 || h.end_entry != original.header.end_entry {
            return Err(bad(original, 4));
        }
        let p = progress(&desc, original)?;
        if h.cur_entry > h.end_entry {
            return Ok(());
        }
        // Partial progress is allowed; no progress (or going backwards) is not.
        let entries_done = u64::from(h.cur_entry);
        if p + entries_done <= last_progress {
            return Err(bad(original, 5));
        }
        last_progress = p + entries_done;
    }
}
