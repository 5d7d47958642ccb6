//! The boot handoff as the firmware checks it: the measured boot information
//! (`BootInfo::check`), the host's unmeasured parameter page (memory map, request,
//! vCPU count: `guest-firmware/src/boot.rs`, `check_host_params`, over shared-abi
//! `parse_memory_map`, `HostRequest::parse`, `host_cpus`) and the measured argument
//! blob (`ArgsBlob::parse`).
//!
//! Input: the RAM limit's selector (a byte: the SEV-SNP firmware's none or the TD's
//! 4 GiB), the boot information (128 bytes), the parameter page (4096 bytes), then the
//! argument blob (the rest).
//!
//! Invariants:
//! - a boot information the firmware accepts has its regions in order inside the
//!   image, which fits the smallest memory it asks for;
//! - accepted parameters describe exactly one RAM range from GPA 0, 2 MiB aligned, at
//!   least the image's minimum and at most the platform's limit, 1 to 16 vCPUs, and a
//!   request that is byte for byte the page's;
//! - an accepted argument blob re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_fuzz::Bytes;
use nacre_guest_firmware::boot::check_host_params;
use nacre_shared_abi::boot::{ArgsBlob, BootInfo, MemoryMapEntry, HOST_REQUEST_OFFSET, MAX_CPUS};
use nacre_shared_abi::filetree::HEADER_SIZE as TREE_HEADER_SIZE;
use nacre_shared_abi::layout::{
    GUEST_MEMORY_ALIGN, MAX_GUEST_MEMORY, MIN_GUEST_MEMORY, PAGE_SIZE_4K, TDX_MAX_GUEST_MEMORY,
};
use zerocopy::{FromBytes, IntoBytes};

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::new(data);
    let ram_limit = if input.u8() & 1 == 0 {
        u64::MAX
    } else {
        TDX_MAX_GUEST_MEMORY
    };
    let bi = BootInfo::read_from_bytes(&input.array::<128>()).expect("128 bytes");
    let param = input.array::<4096>();
    let args = input.rest();

    if bi.check().is_ok() {
        assert!(bi.app_size > 0 && bi.app_gpa >= bi.firmware_end);
        assert!(bi.args_gpa >= bi.app_gpa + bi.app_size);
        assert!(bi.fs_gpa >= bi.args_gpa + bi.args_size);
        assert!(bi.fs_gpa % PAGE_SIZE_4K == 0 && bi.fs_size >= TREE_HEADER_SIZE);
        assert!(bi.fs_gpa + bi.fs_size <= bi.image_end);
        assert!(bi.image_end % PAGE_SIZE_4K == 0 && bi.image_end <= bi.min_memory);
    }

    if let Ok(p) = check_host_params(&bi, &param, ram_limit) {
        assert_eq!(p.ram % GUEST_MEMORY_ALIGN, 0);
        assert!(p.ram >= bi.min_memory.max(MIN_GUEST_MEMORY));
        assert!(p.ram <= MAX_GUEST_MEMORY.min(ram_limit));
        assert!((1..=MAX_CPUS).contains(&p.cpus));
        let first = MemoryMapEntry::read_from_bytes(&param[..24]).expect("24 bytes");
        assert_eq!(first.starting_gpa_page_number, 0);
        assert_eq!(first.number_of_pages * PAGE_SIZE_4K, p.ram);
        let second = MemoryMapEntry::read_from_bytes(&param[24..48]).expect("24 bytes");
        assert_eq!(second.number_of_pages, 0, "one RAM range");
        match p.request {
            Some(r) => assert_eq!(
                r.as_bytes(),
                &param[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128]
            ),
            None => assert!(param[HOST_REQUEST_OFFSET..HOST_REQUEST_OFFSET + 128]
                .iter()
                .all(|&b| b == 0)),
        }
    }

    if let Ok(blob) = ArgsBlob::parse(args) {
        let strings: Vec<&[u8]> = blob.strings().collect();
        assert_eq!(strings.len(), (blob.argc() + blob.envc()) as usize);
        let (argv, envp) = strings.split_at(blob.argc() as usize);
        let mut out = vec![0u8; ArgsBlob::encoded_len(strings.iter().copied())];
        ArgsBlob::encode(argv, envp, &mut out).expect("re-encodes");
        assert_eq!(out, args, "the blob re-encodes differently");
    }
});
