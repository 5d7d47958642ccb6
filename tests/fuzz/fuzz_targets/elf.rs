//! The ELF checks of the packager (`loader/src/elf.rs`: `check_app_elf` for the app
//! `nacre package` is given, `check_firmware_elf` for the firmware) on any file.
//!
//! Input: the file.
//!
//! Invariants:
//! - an accepted app spans a whole, non-empty number of pages of the user half, and a
//!   fixed-address one's entry point lies there too;
//! - an accepted firmware's segments lie in the firmware region, in ascending order,
//!   disjoint, non-empty, with no more file bytes than memory; its entry point is in
//!   the file bytes of one of them; its end is page aligned and inside the region; a
//!   TDX reset page, if any, is at most one page at the reset page's address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_loader::elf::{check_app_elf, check_firmware_elf};
use nacre_shared_abi::layout::{
    FIRMWARE_GPA, FIRMWARE_GPA_END, KERNEL_VA_BASE, NULL_GUARD_END, PAGE_SIZE_4K,
    TDX_RESET_PAGE_GPA, USER_VA_END,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(app) = check_app_elf(data) {
        assert!(app.size > 0 && app.size % PAGE_SIZE_4K == 0);
        assert!(app.size <= USER_VA_END);
        if !app.pie {
            assert!((NULL_GUARD_END..USER_VA_END).contains(&app.entry));
        }
    }
    if let Ok(fw) = check_firmware_elf(data) {
        assert!(!fw.segments.is_empty());
        let mut prev_end = FIRMWARE_GPA;
        for seg in &fw.segments {
            assert!(seg.mem_size > 0);
            assert!(seg.gpa >= prev_end, "segments overlap or are out of order");
            assert!(seg.file_bytes.len() as u64 <= seg.mem_size);
            prev_end = seg.gpa + seg.mem_size;
            assert!(prev_end <= FIRMWARE_GPA_END);
        }
        let entry = fw.entry.wrapping_sub(KERNEL_VA_BASE);
        assert!(
            fw.segments
                .iter()
                .any(|s| entry >= s.gpa && entry - s.gpa < s.file_bytes.len() as u64),
            "entry {:#x}",
            fw.entry
        );
        let end = fw.end();
        assert!(end % PAGE_SIZE_4K == 0 && end > FIRMWARE_GPA && end <= FIRMWARE_GPA_END);
        if let Some(reset) = fw.tdx_reset {
            assert_eq!(reset.gpa, TDX_RESET_PAGE_GPA);
            assert!(reset.mem_size <= PAGE_SIZE_4K);
        }
    }
});
