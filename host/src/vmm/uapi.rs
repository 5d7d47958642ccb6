//! The part of the Linux KVM and SEV user-space ABI that the hardware platforms need
//! and kvm-bindings 0.14 / kvm-ioctls 0.25 do not give: ioctl numbers, the TDX
//! structures, the `/dev/sev` platform status, the `kvm_run` fields of the exits those
//! crates leave undecoded, and the constants of `kvm_para.h`. Where kvm-bindings has a
//! structure (the SEV-SNP launch commands, guest_memfd, memory attributes), it is used
//! and its layout asserted here, so that every size, offset and number the hardware
//! launch depends on is pinned in one place.
//!
//! Every value below is asserted against the Linux 7.2 UAPI headers
//! (`include/uapi/linux/kvm.h`, `arch/x86/include/uapi/asm/kvm.h`,
//! `include/uapi/linux/kvm_para.h`, `arch/x86/include/uapi/asm/kvm_para.h`,
//! `include/uapi/linux/psp-sev.h`), as docs/kvm-uapi.md lists them with the probe that
//! printed them (`ci/uapi-probe/`). The ABI is stable: a value never changes once
//! merged, so a newer kernel only adds to it.

use kvm_bindings::{
    kvm_cpuid2, kvm_cpuid_entry2, kvm_create_guest_memfd, kvm_device_attr, kvm_memory_attributes,
    kvm_run, kvm_sev_cmd, kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start,
    kvm_sev_snp_launch_update, kvm_userspace_memory_region2,
};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::RawFd;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ---------------------------------------------------------------------------------
// ioctl numbers (`include/uapi/asm-generic/ioctl.h`: dir << 30 | size << 16 | type << 8
// | nr).

const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// An ioctl request number, as `_IOC(dir, type, nr, size)` makes it.
const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// KVM's ioctl type (`KVMIO`).
const KVMIO: u8 = 0xAE;
/// The SEV driver's ioctl type (`SEV_IOC_TYPE`, `'S'`).
const SEV_IOC_TYPE: u8 = b'S';

/// `KVM_MEMORY_ENCRYPT_OP`: `_IOWR(KVMIO, 0xba, unsigned long)`; on the VM fd for the
/// SEV commands and most TDX ones, on a vCPU fd for the per-vCPU TDX commands.
pub const KVM_MEMORY_ENCRYPT_OP: u64 = ioc(IOC_READ | IOC_WRITE, KVMIO, 0xBA, 8);
/// `KVM_GET_DEVICE_ATTR`: `_IOW(KVMIO, 0xe2, struct kvm_device_attr)`; on `/dev/kvm`
/// it reads system attributes such as the supported VMSA features.
pub const KVM_GET_DEVICE_ATTR: u64 = ioc(IOC_WRITE, KVMIO, 0xE2, size_of::<kvm_device_attr>());
/// `KVM_SET_MEMORY_ATTRIBUTES`: `_IOW(KVMIO, 0xd2, struct kvm_memory_attributes)`.
pub const KVM_SET_MEMORY_ATTRIBUTES: u64 =
    ioc(IOC_WRITE, KVMIO, 0xD2, size_of::<kvm_memory_attributes>());
/// `KVM_CREATE_GUEST_MEMFD`: `_IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)`.
pub const KVM_CREATE_GUEST_MEMFD: u64 = ioc(
    IOC_READ | IOC_WRITE,
    KVMIO,
    0xD4,
    size_of::<kvm_create_guest_memfd>(),
);
/// `KVM_SET_USER_MEMORY_REGION2`: `_IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)`.
pub const KVM_SET_USER_MEMORY_REGION2: u64 = ioc(
    IOC_WRITE,
    KVMIO,
    0x49,
    size_of::<kvm_userspace_memory_region2>(),
);
/// `SEV_ISSUE_CMD`: `_IOWR('S', 0x0, struct sev_issue_cmd)` on `/dev/sev`.
pub const SEV_ISSUE_CMD: u64 = ioc(
    IOC_READ | IOC_WRITE,
    SEV_IOC_TYPE,
    0,
    size_of::<SevIssueCmd>(),
);

const _: () = assert!(KVM_MEMORY_ENCRYPT_OP == 0xC008_AEBA);
const _: () = assert!(KVM_GET_DEVICE_ATTR == 0x4018_AEE2);
const _: () = assert!(KVM_SET_MEMORY_ATTRIBUTES == 0x4020_AED2);
const _: () = assert!(KVM_CREATE_GUEST_MEMFD == 0xC040_AED4);
const _: () = assert!(KVM_SET_USER_MEMORY_REGION2 == 0x40A0_AE49);
const _: () = assert!(SEV_ISSUE_CMD == 0xC010_5300);
// The numbers kvm-ioctls computes for the ioctls it wraps, with the same macro.
const _: () = assert!(ioc(0, KVMIO, 0x01, 0) == 0xAE01); // KVM_CREATE_VM
const _: () = assert!(ioc(0, KVMIO, 0x03, 0) == 0xAE03); // KVM_CHECK_EXTENSION
const _: () = assert!(ioc(IOC_WRITE, KVMIO, 0xA3, 104) == 0x4068_AEA3); // KVM_ENABLE_CAP

// ---------------------------------------------------------------------------------
// Constants (`include/uapi/linux/kvm.h`, `arch/x86/include/uapi/asm/kvm.h`).

/// `KVM_X86_DEFAULT_VM`.
pub const KVM_X86_DEFAULT_VM: u32 = 0;
/// `KVM_X86_SW_PROTECTED_VM`.
pub const KVM_X86_SW_PROTECTED_VM: u32 = 1;
/// `KVM_X86_SNP_VM`.
pub const KVM_X86_SNP_VM: u32 = 4;
/// `KVM_X86_TDX_VM`.
pub const KVM_X86_TDX_VM: u32 = 5;
const _: () = assert!(KVM_X86_SNP_VM == kvm_bindings::KVM_X86_SNP_VM);
const _: () = assert!(KVM_X86_TDX_VM == kvm_bindings::KVM_X86_TDX_VM);
const _: () = assert!(KVM_X86_DEFAULT_VM == kvm_bindings::KVM_X86_DEFAULT_VM);
const _: () = assert!(KVM_X86_SW_PROTECTED_VM == kvm_bindings::KVM_X86_SW_PROTECTED_VM);

/// Capabilities, by their `KVM_CAP_*` number (`include/uapi/linux/kvm.h`).
pub mod cap {
    /// `KVM_CAP_SPLIT_IRQCHIP`.
    pub const SPLIT_IRQCHIP: u32 = 121;
    /// `KVM_CAP_X86_USER_SPACE_MSR`.
    pub const X86_USER_SPACE_MSR: u32 = 188;
    /// `KVM_CAP_X86_MSR_FILTER`.
    pub const X86_MSR_FILTER: u32 = 189;
    /// `KVM_CAP_EXIT_HYPERCALL`: the mask of hypercalls that may exit to user space.
    pub const EXIT_HYPERCALL: u32 = 201;
    /// `KVM_CAP_USER_MEMORY2`.
    pub const USER_MEMORY2: u32 = 231;
    /// `KVM_CAP_MEMORY_FAULT_INFO`.
    pub const MEMORY_FAULT_INFO: u32 = 232;
    /// `KVM_CAP_MEMORY_ATTRIBUTES`: the attributes `KVM_SET_MEMORY_ATTRIBUTES` takes.
    pub const MEMORY_ATTRIBUTES: u32 = 233;
    /// `KVM_CAP_GUEST_MEMFD`.
    pub const GUEST_MEMFD: u32 = 234;
    /// `KVM_CAP_VM_TYPES`: the mask of the VM types `KVM_CREATE_VM` takes.
    pub const VM_TYPES: u32 = 235;

    /// The capability's `KVM_CAP_*` name, for messages.
    pub fn name(cap: u32) -> &'static str {
        match cap {
            SPLIT_IRQCHIP => "KVM_CAP_SPLIT_IRQCHIP",
            X86_USER_SPACE_MSR => "KVM_CAP_X86_USER_SPACE_MSR",
            X86_MSR_FILTER => "KVM_CAP_X86_MSR_FILTER",
            EXIT_HYPERCALL => "KVM_CAP_EXIT_HYPERCALL",
            USER_MEMORY2 => "KVM_CAP_USER_MEMORY2",
            MEMORY_FAULT_INFO => "KVM_CAP_MEMORY_FAULT_INFO",
            MEMORY_ATTRIBUTES => "KVM_CAP_MEMORY_ATTRIBUTES",
            GUEST_MEMFD => "KVM_CAP_GUEST_MEMFD",
            VM_TYPES => "KVM_CAP_VM_TYPES",
            _ => "a KVM capability",
        }
    }

    const _: () = assert!(SPLIT_IRQCHIP == kvm_bindings::KVM_CAP_SPLIT_IRQCHIP);
    const _: () = assert!(X86_USER_SPACE_MSR == kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR);
    const _: () = assert!(X86_MSR_FILTER == kvm_bindings::KVM_CAP_X86_MSR_FILTER);
    const _: () = assert!(EXIT_HYPERCALL == kvm_bindings::KVM_CAP_EXIT_HYPERCALL);
    const _: () = assert!(USER_MEMORY2 == kvm_bindings::KVM_CAP_USER_MEMORY2);
    const _: () = assert!(MEMORY_FAULT_INFO == kvm_bindings::KVM_CAP_MEMORY_FAULT_INFO);
    const _: () = assert!(MEMORY_ATTRIBUTES == kvm_bindings::KVM_CAP_MEMORY_ATTRIBUTES);
    const _: () = assert!(GUEST_MEMFD == kvm_bindings::KVM_CAP_GUEST_MEMFD);
    const _: () = assert!(VM_TYPES == kvm_bindings::KVM_CAP_VM_TYPES);
}

/// `KVM_MEM_GUEST_MEMFD`: a memory slot whose private pages live in a guest_memfd.
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE`.
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE`: the faulting access was a private one.
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
const _: () = assert!(KVM_MEM_GUEST_MEMFD == kvm_bindings::KVM_MEM_GUEST_MEMFD);
const _: () =
    assert!(KVM_MEMORY_ATTRIBUTE_PRIVATE == kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64);
const _: () =
    assert!(KVM_MEMORY_EXIT_FLAG_PRIVATE == kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE as u64);

/// Exit reasons (`KVM_EXIT_*`).
pub mod exit {
    /// `KVM_EXIT_IO`.
    pub const IO: u32 = 2;
    /// `KVM_EXIT_HYPERCALL`.
    pub const HYPERCALL: u32 = 3;
    /// `KVM_EXIT_SYSTEM_EVENT`.
    pub const SYSTEM_EVENT: u32 = 24;
    /// `KVM_EXIT_MEMORY_FAULT`.
    pub const MEMORY_FAULT: u32 = 39;
    /// `KVM_EXIT_TDX`: a TDG.VP.VMCALL KVM leaves to user space.
    pub const TDX: u32 = 40;
    /// `KVM_EXIT_SNP_REQ_CERTS`: an extended guest request wants certificates (only
    /// once user space enabled it with `KVM_SEV_SNP_ENABLE_REQ_CERTS`).
    pub const SNP_REQ_CERTS: u32 = 43;

    const _: () = assert!(IO == kvm_bindings::KVM_EXIT_IO);
    const _: () = assert!(HYPERCALL == kvm_bindings::KVM_EXIT_HYPERCALL);
    const _: () = assert!(SYSTEM_EVENT == kvm_bindings::KVM_EXIT_SYSTEM_EVENT);
    const _: () = assert!(MEMORY_FAULT == kvm_bindings::KVM_EXIT_MEMORY_FAULT);
}

/// System event types (`KVM_SYSTEM_EVENT_*`).
pub mod system_event {
    /// `KVM_SYSTEM_EVENT_SHUTDOWN`.
    pub const SHUTDOWN: u32 = 1;
    /// `KVM_SYSTEM_EVENT_RESET`.
    pub const RESET: u32 = 2;
    /// `KVM_SYSTEM_EVENT_CRASH`.
    pub const CRASH: u32 = 3;
    /// `KVM_SYSTEM_EVENT_SEV_TERM`: the SEV guest asked to be terminated; `data[0]` is
    /// the GHCB MSR value of its request (`arch/x86/kvm/svm/sev.c`,
    /// `sev_handle_vmgexit_msr_protocol`).
    pub const SEV_TERM: u32 = 6;
    /// `KVM_SYSTEM_EVENT_TDX_FATAL`: TDG.VP.VMCALL ReportFatalError; `data[i]` is the
    /// TD's GPR `i` in the SDM encoding order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI,
    /// R8..R15), so the error code (R12) is `data[12]` (`arch/x86/kvm/vmx/tdx.c`,
    /// `tdx_report_fatal_error`).
    pub const TDX_FATAL: u32 = 7;
    /// The index of R12 in a `TDX_FATAL` event's data.
    pub const TDX_FATAL_R12: usize = 12;

    const _: () = assert!(SEV_TERM == kvm_bindings::KVM_SYSTEM_EVENT_SEV_TERM);
}

/// `KVM_HC_MAP_GPA_RANGE` and its attribute bits (`include/uapi/linux/kvm_para.h`,
/// `arch/x86/include/uapi/asm/kvm_para.h`; kvm-bindings does not bind them).
pub mod map_gpa_range {
    /// The hypercall number: `args[0]` = GPA, `args[1]` = number of 4 KiB pages,
    /// `args[2]` = attributes.
    pub const NR: u64 = 12;
    /// `KVM_MAP_GPA_RANGE_PAGE_SZ_4K` .. `_1G` in bits 1:0 of `args[2]`.
    pub const PAGE_SIZE_MASK: u64 = 0b11;
    /// `KVM_MAP_GPA_RANGE_PAGE_SZ_2M`.
    pub const PAGE_SZ_2M: u64 = 1;
    /// `KVM_MAP_GPA_RANGE_PAGE_SZ_1G`.
    pub const PAGE_SZ_1G: u64 = 2;
    /// `KVM_MAP_GPA_RANGE_ENCRYPTED`: the range becomes private (clear: shared).
    pub const ENCRYPTED: u64 = 1 << 4;
    /// The bit of `KVM_CAP_EXIT_HYPERCALL` that lets this hypercall exit.
    pub const EXIT_HYPERCALL_BIT: u64 = 1 << NR;
}

/// `KVM_X86_GRP_SEV` and its attributes (`KVM_GET_DEVICE_ATTR` on `/dev/kvm`).
pub mod sev_attr {
    /// `KVM_X86_GRP_SEV`.
    pub const GROUP: u32 = 1;
    /// `KVM_X86_SEV_VMSA_FEATURES`: the `sev_features` bits `KVM_SEV_INIT2` takes.
    pub const VMSA_FEATURES: u64 = 0;
    const _: () = assert!(GROUP == kvm_bindings::KVM_X86_GRP_SEV);
    const _: () = assert!(VMSA_FEATURES == kvm_bindings::KVM_X86_SEV_VMSA_FEATURES as u64);
}

// ---------------------------------------------------------------------------------
// SEV and SEV-SNP commands (`arch/x86/include/uapi/asm/kvm.h`, `enum sev_cmd_id`).

/// `enum sev_cmd_id` values nacre issues.
pub mod sev_cmd {
    /// `KVM_SEV_INIT2`.
    pub const INIT2: u32 = 22;
    /// `KVM_SEV_SNP_LAUNCH_START`.
    pub const SNP_LAUNCH_START: u32 = 100;
    /// `KVM_SEV_SNP_LAUNCH_UPDATE`.
    pub const SNP_LAUNCH_UPDATE: u32 = 101;
    /// `KVM_SEV_SNP_LAUNCH_FINISH`.
    pub const SNP_LAUNCH_FINISH: u32 = 102;
    const _: () = assert!(INIT2 == kvm_bindings::sev_cmd_id_KVM_SEV_INIT2);
    const _: () = assert!(SNP_LAUNCH_START == kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START);
    const _: () = assert!(SNP_LAUNCH_UPDATE == kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE);
    const _: () = assert!(SNP_LAUNCH_FINISH == kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH);
}

/// `KVM_SEV_SNP_PAGE_TYPE_VMSA`: KVM refuses it from user space (it adds the VMSAs at
/// LAUNCH_FINISH itself).
pub const KVM_SEV_SNP_PAGE_TYPE_VMSA: u8 = 2;

/// `KVM_MEMORY_ENCRYPT_OP`'s argument on an SEV VM.
pub type KvmSevCmd = kvm_sev_cmd;
/// `KVM_SEV_INIT2`'s argument.
pub type KvmSevInit = kvm_sev_init;
/// `KVM_SEV_SNP_LAUNCH_START`'s argument.
pub type KvmSevSnpLaunchStart = kvm_sev_snp_launch_start;
/// `KVM_SEV_SNP_LAUNCH_UPDATE`'s argument; the kernel writes the remainder of a
/// partly done update back into it.
pub type KvmSevSnpLaunchUpdate = kvm_sev_snp_launch_update;
/// `KVM_SEV_SNP_LAUNCH_FINISH`'s argument: 88 bytes (the `sev` crate's 56-byte copy
/// lacks `vcek_disabled`, `flags` and the padding, which shifts HOST_DATA by a byte).
pub type KvmSevSnpLaunchFinish = kvm_sev_snp_launch_finish;

const _: () = assert!(size_of::<kvm_sev_cmd>() == 24);
const _: () = assert!(offset_of!(kvm_sev_cmd, data) == 8);
const _: () = assert!(offset_of!(kvm_sev_cmd, error) == 16);
const _: () = assert!(offset_of!(kvm_sev_cmd, sev_fd) == 20);
const _: () = assert!(size_of::<kvm_sev_init>() == 48);
const _: () = assert!(offset_of!(kvm_sev_init, flags) == 8);
const _: () = assert!(offset_of!(kvm_sev_init, ghcb_version) == 12);
const _: () = assert!(offset_of!(kvm_sev_init, pad2) == 16);
const _: () = assert!(size_of::<kvm_sev_snp_launch_start>() == 64);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_start, gosvw) == 8);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_start, flags) == 24);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_start, pad1) == 32);
const _: () = assert!(size_of::<kvm_sev_snp_launch_update>() == 64);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_update, uaddr) == 8);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_update, len) == 16);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_update, type_) == 24);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_update, flags) == 26);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_update, pad2) == 32);
const _: () = assert!(size_of::<kvm_sev_snp_launch_finish>() == 88);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, id_auth_uaddr) == 8);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, id_block_en) == 16);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, auth_key_en) == 17);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, vcek_disabled) == 18);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, host_data) == 19);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, flags) == 54);
const _: () = assert!(offset_of!(kvm_sev_snp_launch_finish, pad1) == 56);

// ---------------------------------------------------------------------------------
// guest_memfd and memory attributes (`include/uapi/linux/kvm.h`).

const _: () = assert!(size_of::<kvm_create_guest_memfd>() == 64);
const _: () = assert!(size_of::<kvm_memory_attributes>() == 32);
const _: () = assert!(offset_of!(kvm_memory_attributes, size) == 8);
const _: () = assert!(offset_of!(kvm_memory_attributes, attributes) == 16);
const _: () = assert!(offset_of!(kvm_memory_attributes, flags) == 24);
const _: () = assert!(size_of::<kvm_userspace_memory_region2>() == 160);
const _: () = assert!(offset_of!(kvm_userspace_memory_region2, guest_phys_addr) == 8);
const _: () = assert!(offset_of!(kvm_userspace_memory_region2, memory_size) == 16);
const _: () = assert!(offset_of!(kvm_userspace_memory_region2, userspace_addr) == 24);
const _: () = assert!(offset_of!(kvm_userspace_memory_region2, guest_memfd_offset) == 32);
const _: () = assert!(offset_of!(kvm_userspace_memory_region2, guest_memfd) == 40);
const _: () = assert!(size_of::<kvm_device_attr>() == 24);
const _: () = assert!(size_of::<kvm_cpuid2>() == 8);
const _: () = assert!(size_of::<kvm_cpuid_entry2>() == 40);

// ---------------------------------------------------------------------------------
// TDX (`arch/x86/include/uapi/asm/kvm.h`, `enum kvm_tdx_cmd_id` and the structures
// after it; kvm-bindings 0.14 has none of them).

/// `enum kvm_tdx_cmd_id`.
pub mod tdx_cmd {
    /// `KVM_TDX_CAPABILITIES` (VM fd).
    pub const CAPABILITIES: u32 = 0;
    /// `KVM_TDX_INIT_VM` (VM fd, before any vCPU).
    pub const INIT_VM: u32 = 1;
    /// `KVM_TDX_INIT_VCPU` (vCPU fd).
    pub const INIT_VCPU: u32 = 2;
    /// `KVM_TDX_INIT_MEM_REGION` (vCPU fd).
    pub const INIT_MEM_REGION: u32 = 3;
    /// `KVM_TDX_FINALIZE_VM` (VM fd).
    pub const FINALIZE_VM: u32 = 4;
}

/// `KVM_TDX_MEASURE_MEMORY_REGION`: INIT_MEM_REGION also extends MRTD with the pages.
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1;

/// `struct kvm_tdx_cmd`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct KvmTdxCmd {
    /// A [`tdx_cmd`] value.
    pub id: u32,
    /// Flags of the sub-command.
    pub flags: u32,
    /// An immediate or a pointer to the sub-command's structure.
    pub data: u64,
    /// Out: the SEAMCALL status behind an error. Must be 0 on input.
    pub hw_error: u64,
}

/// `struct kvm_cpuid_entry2`, as bytes can be read and written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CpuidEntry {
    /// Leaf.
    pub function: u32,
    /// Sub-leaf.
    pub index: u32,
    /// `KVM_CPUID_FLAG_*`.
    pub flags: u32,
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// Padding.
    pub padding: [u32; 3],
}

impl From<kvm_cpuid_entry2> for CpuidEntry {
    fn from(e: kvm_cpuid_entry2) -> Self {
        Self {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            padding: [0; 3],
        }
    }
}

impl From<CpuidEntry> for kvm_cpuid_entry2 {
    fn from(e: CpuidEntry) -> Self {
        Self {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            ..Default::default()
        }
    }
}

/// `struct kvm_cpuid2` without its entries: what ends the TDX structures.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Cpuid2Header {
    /// Number of entries that follow (in: the room; out: the count).
    pub nent: u32,
    /// Padding.
    pub padding: u32,
}

/// `struct kvm_tdx_capabilities`, up to its CPUID entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KvmTdxCapabilities {
    /// TD attributes KVM and the TDX module allow.
    pub supported_attrs: u64,
    /// XFAM bits they allow.
    pub supported_xfam: u64,
    /// GetTdVmCallInfo leaf 1 R11 bits KVM implements.
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// GetTdVmCallInfo leaf 1 R11 bits user space may implement.
    pub user_tdvmcallinfo_1_r11: u64,
    /// The same for R12, KVM's.
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// The same for R12, user space's.
    pub user_tdvmcallinfo_1_r12: u64,
    /// Reserved.
    pub reserved: [u64; 250],
    /// The configurable CPUID bits follow as entries (each register a mask).
    pub cpuid: Cpuid2Header,
}

/// `struct kvm_tdx_init_vm`, up to its CPUID entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KvmTdxInitVm {
    /// TD attributes (ATTRIBUTES of TD_PARAMS).
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRCONFIGID (SHA-384).
    pub mrconfigid: [u64; 6],
    /// MROWNER (SHA-384).
    pub mrowner: [u64; 6],
    /// MROWNERCONFIG (SHA-384).
    pub mrownerconfig: [u64; 6],
    /// Reserved, 0.
    pub reserved: [u64; 12],
    /// The CPUID configuration follows as entries.
    pub cpuid: Cpuid2Header,
}

/// `struct kvm_tdx_init_mem_region`; the kernel writes the remainder of a partly done
/// call back into it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct KvmTdxInitMemRegion {
    /// User address of the first source page.
    pub source_addr: u64,
    /// GPA of the first page.
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub nr_pages: u64,
}

const _: () = assert!(size_of::<KvmTdxCmd>() == 24);
const _: () = assert!(offset_of!(KvmTdxCmd, flags) == 4);
const _: () = assert!(offset_of!(KvmTdxCmd, data) == 8);
const _: () = assert!(offset_of!(KvmTdxCmd, hw_error) == 16);
const _: () = assert!(size_of::<CpuidEntry>() == size_of::<kvm_cpuid_entry2>());
const _: () = assert!(size_of::<KvmTdxCapabilities>() == 2056);
const _: () = assert!(offset_of!(KvmTdxCapabilities, supported_xfam) == 8);
const _: () = assert!(offset_of!(KvmTdxCapabilities, kernel_tdvmcallinfo_1_r11) == 16);
const _: () = assert!(offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r11) == 24);
const _: () = assert!(offset_of!(KvmTdxCapabilities, kernel_tdvmcallinfo_1_r12) == 32);
const _: () = assert!(offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r12) == 40);
const _: () = assert!(offset_of!(KvmTdxCapabilities, reserved) == 48);
const _: () = assert!(offset_of!(KvmTdxCapabilities, cpuid) == 2048);
const _: () = assert!(size_of::<KvmTdxInitVm>() == 264);
const _: () = assert!(offset_of!(KvmTdxInitVm, xfam) == 8);
const _: () = assert!(offset_of!(KvmTdxInitVm, mrconfigid) == 16);
const _: () = assert!(offset_of!(KvmTdxInitVm, mrowner) == 64);
const _: () = assert!(offset_of!(KvmTdxInitVm, mrownerconfig) == 112);
const _: () = assert!(offset_of!(KvmTdxInitVm, reserved) == 160);
const _: () = assert!(offset_of!(KvmTdxInitVm, cpuid) == 256);
const _: () = assert!(size_of::<KvmTdxInitMemRegion>() == 24);
const _: () = assert!(offset_of!(KvmTdxInitMemRegion, gpa) == 8);
const _: () = assert!(offset_of!(KvmTdxInitMemRegion, nr_pages) == 16);

/// A TDX structure that ends in a `struct kvm_cpuid2`, followed by room for its
/// entries, in one 8-byte aligned buffer the kernel can read and write.
#[derive(Debug, Clone)]
pub struct WithCpuid<H> {
    buf: Vec<u64>,
    room: usize,
    _head: std::marker::PhantomData<H>,
}

impl<H: FromBytes + IntoBytes + Immutable + KnownLayout> WithCpuid<H> {
    const HEAD: usize = size_of::<H>();
    const ENTRY: usize = size_of::<CpuidEntry>();

    /// `head` with room for `room` entries (its `nent` is set to the room).
    pub fn new(head: &H, room: usize) -> Self {
        let bytes = Self::HEAD + room * Self::ENTRY;
        let mut this = Self {
            buf: vec![0; bytes.div_ceil(8)],
            room,
            _head: std::marker::PhantomData,
        };
        this.bytes_mut()[..Self::HEAD].copy_from_slice(head.as_bytes());
        this.set_nent(room);
        this
    }

    /// `head` followed by `entries`.
    pub fn with_entries(head: &H, entries: &[CpuidEntry]) -> Self {
        let mut this = Self::new(head, entries.len());
        for (i, e) in entries.iter().enumerate() {
            let at = Self::HEAD + i * Self::ENTRY;
            this.bytes_mut()[at..at + Self::ENTRY].copy_from_slice(e.as_bytes());
        }
        this
    }

    fn bytes(&self) -> &[u8] {
        &self.buf.as_bytes()[..Self::HEAD + self.room * Self::ENTRY]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = Self::HEAD + self.room * Self::ENTRY;
        &mut self.buf.as_mut_bytes()[..len]
    }

    /// The fixed part.
    pub fn head(&self) -> H {
        // The buffer always holds HEAD bytes.
        H::read_from_bytes(&self.bytes()[..Self::HEAD]).unwrap_or_else(|_| H::new_zeroed())
    }

    /// `cpuid.nent`, the last 8 bytes of the fixed part.
    pub fn nent(&self) -> usize {
        let at = Self::HEAD - size_of::<Cpuid2Header>();
        let mut n = [0u8; 4];
        n.copy_from_slice(&self.bytes()[at..at + 4]);
        u32::from_le_bytes(n) as usize
    }

    fn set_nent(&mut self, n: usize) {
        let at = Self::HEAD - size_of::<Cpuid2Header>();
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.bytes_mut()[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }

    /// Room for entries.
    pub fn room(&self) -> usize {
        self.room
    }

    /// The entries the structure holds (`nent`, at most the room).
    pub fn entries(&self) -> Vec<CpuidEntry> {
        (0..self.nent().min(self.room))
            .filter_map(|i| {
                let at = Self::HEAD + i * Self::ENTRY;
                CpuidEntry::read_from_bytes(&self.bytes()[at..at + Self::ENTRY]).ok()
            })
            .collect()
    }

    /// The buffer's address, for the ioctl.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr().cast()
    }

    /// Replace the fixed part and entries as the kernel would write them (for tests).
    #[cfg(test)]
    pub fn fill(&mut self, head: &H, entries: &[CpuidEntry]) {
        self.bytes_mut()[..Self::HEAD].copy_from_slice(head.as_bytes());
        self.set_nent(entries.len());
        for (i, e) in entries.iter().take(self.room).enumerate() {
            let at = Self::HEAD + i * Self::ENTRY;
            self.bytes_mut()[at..at + Self::ENTRY].copy_from_slice(e.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------
// /dev/sev (`include/uapi/linux/psp-sev.h`).

/// `SNP_PLATFORM_STATUS` in the SEV driver's command enum.
pub const SEV_CMD_SNP_PLATFORM_STATUS: u32 = 9;

/// `struct sev_issue_cmd` (packed).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed)]
pub struct SevIssueCmd {
    /// The driver command.
    pub cmd: u32,
    /// Address of the command's structure.
    pub data: u64,
    /// Out: the firmware's status.
    pub error: u32,
}

const _: () = assert!(size_of::<SevIssueCmd>() == 16);
const _: () = assert!(offset_of!(SevIssueCmd, data) == 4);
const _: () = assert!(offset_of!(SevIssueCmd, error) == 12);

/// `struct sev_user_data_snp_status` (packed in C; its fields are naturally aligned,
/// so `repr(C)` gives the same offsets).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SevUserDataSnpStatus {
    /// Firmware API major version.
    pub api_major: u8,
    /// Firmware API minor version.
    pub api_minor: u8,
    /// Platform state: 0 UNINIT, 1 INIT.
    pub state: u8,
    /// Bit 0: the RMP is initialized.
    pub rmp_flags: u8,
    /// Firmware build.
    pub build_id: u32,
    /// Bits: MASK_CHIP_ID, MASK_CHIP_KEY, VLEK_EN, FEATURE_INFO, RAPL_DIS, ...
    pub features: u32,
    /// Guests the firmware manages.
    pub guest_count: u32,
    /// Current TCB version.
    pub current_tcb_version: u64,
    /// Reported TCB version.
    pub reported_tcb_version: u64,
}

const _: () = assert!(size_of::<SevUserDataSnpStatus>() == 32);
const _: () = assert!(offset_of!(SevUserDataSnpStatus, state) == 2);
const _: () = assert!(offset_of!(SevUserDataSnpStatus, build_id) == 4);
const _: () = assert!(offset_of!(SevUserDataSnpStatus, guest_count) == 12);
const _: () = assert!(offset_of!(SevUserDataSnpStatus, current_tcb_version) == 16);
const _: () = assert!(offset_of!(SevUserDataSnpStatus, reported_tcb_version) == 24);

// ---------------------------------------------------------------------------------
// `struct kvm_run` (`include/uapi/linux/kvm.h`): the fields of the exits nacre reads by
// offset, because kvm-ioctls decodes them as `VcpuExit::Unsupported`.

/// Offsets into `struct kvm_run`.
pub mod run {
    use std::mem::size_of;

    /// `sizeof(struct kvm_run)`.
    pub const SIZE: usize = 2352;
    /// `exit_reason` (u32).
    pub const EXIT_REASON: usize = 8;
    /// `hypercall.nr`; `args[6]` follow at 40, `ret` at 88, `flags` at 96.
    pub const HYPERCALL_NR: usize = 32;
    /// `hypercall.args[0]`.
    pub const HYPERCALL_ARGS: usize = 40;
    /// `hypercall.ret`.
    pub const HYPERCALL_RET: usize = 88;
    /// `memory_fault.flags`.
    pub const MEMORY_FAULT_FLAGS: usize = 32;
    /// `memory_fault.gpa`.
    pub const MEMORY_FAULT_GPA: usize = 40;
    /// `memory_fault.size`.
    pub const MEMORY_FAULT_SIZE: usize = 48;
    /// `system_event.type` (u32).
    pub const SYSTEM_EVENT_TYPE: usize = 32;
    /// `system_event.ndata` (u32).
    pub const SYSTEM_EVENT_NDATA: usize = 36;
    /// `system_event.data[16]`.
    pub const SYSTEM_EVENT_DATA: usize = 40;
    /// `io.direction` (u8): 0 in, 1 out.
    pub const IO_DIRECTION: usize = 32;
    /// `io.size` (u8).
    pub const IO_SIZE: usize = 33;
    /// `io.port` (u16).
    pub const IO_PORT: usize = 34;
    /// `io.count` (u32).
    pub const IO_COUNT: usize = 36;
    /// `io.data_offset` (u64): where in the run area the data is.
    pub const IO_DATA_OFFSET: usize = 40;
    /// `tdx.flags`.
    pub const TDX_FLAGS: usize = 32;
    /// `tdx.nr`: the TDG.VP.VMCALL sub-function.
    pub const TDX_NR: usize = 40;
    /// `tdx.<any>.ret`: the status the TD gets in R10.
    pub const TDX_RET: usize = 48;
    /// `tdx.get_quote.gpa`, `tdx.get_tdvmcall_info.leaf`, `tdx.setup_event_notify.vector`.
    pub const TDX_ARG0: usize = 56;
    /// `tdx.get_quote.size`, `tdx.get_tdvmcall_info.r11` (r12, r13, r14 follow).
    pub const TDX_ARG1: usize = 64;
    /// `snp_req_certs.gpa`.
    pub const SNP_REQ_CERTS_GPA: usize = 32;
    /// `snp_req_certs.npages`.
    pub const SNP_REQ_CERTS_NPAGES: usize = 40;
    /// `snp_req_certs.ret`.
    pub const SNP_REQ_CERTS_RET: usize = 48;
    /// The exit union's size (after it: `kvm_valid_regs` at 288).
    pub const UNION_END: usize = 32 + 256;

    const _: () = assert!(SIZE == size_of::<kvm_bindings::kvm_run>());
    const _: () = assert!(EXIT_REASON == std::mem::offset_of!(kvm_bindings::kvm_run, exit_reason));
    const _: () =
        assert!(HYPERCALL_NR == std::mem::offset_of!(kvm_bindings::kvm_run, __bindgen_anon_1));
    const _: () = assert!(UNION_END == std::mem::offset_of!(kvm_bindings::kvm_run, kvm_valid_regs));
    // The TDX exit's last field (get_tdvmcall_info.r14) ends inside the union.
    const _: () = assert!(TDX_ARG1 + 4 * 8 <= UNION_END);
}

/// The `kvm_run` area of a vCPU as bytes: read and written by offset, with no Rust
/// reference to KVM's structure held across an access.
pub struct RunArea<'a> {
    bytes: &'a mut [u8],
}

impl std::fmt::Debug for RunArea<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunArea(exit reason {})", self.u32(run::EXIT_REASON))
    }
}

impl<'a> RunArea<'a> {
    /// A run area over `bytes` (at least [`run::SIZE`] bytes: a synthetic one in tests).
    pub fn new(bytes: &'a mut [u8]) -> Option<Self> {
        (bytes.len() >= run::SIZE).then_some(Self { bytes })
    }

    /// The run area of a vCPU.
    pub fn of(run: &'a mut kvm_run) -> Self {
        // SAFETY: `kvm_run` is the vCPU's mapping of the kernel's run page, whose
        // `run::SIZE` bytes (the structure's size, asserted above) are all initialized
        // memory; the byte view borrows it exclusively for 'a, like `run` did.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(std::ptr::from_mut(run).cast::<u8>(), run::SIZE)
        };
        Self { bytes }
    }

    /// The u64 at `offset`.
    pub fn u64(&self, offset: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[offset..offset + 8]);
        u64::from_le_bytes(b)
    }

    /// The u32 at `offset`.
    pub fn u32(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[offset..offset + 4]);
        u32::from_le_bytes(b)
    }

    /// Write the u64 at `offset`.
    pub fn set_u64(&mut self, offset: usize, value: u64) {
        self.bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Write the u32 at `offset`.
    pub fn set_u32(&mut self, offset: usize, value: u32) {
        self.bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------
// The ioctls themselves.

/// `ioctl(fd, request, arg)`, its result or the OS error.
///
/// # Safety
///
/// `arg` must point to memory valid for what `request` reads and writes.
pub unsafe fn ioctl_ptr<T>(fd: RawFd, request: u64, arg: *mut T) -> io::Result<i32> {
    // SAFETY: the caller guarantees `arg` matches `request`; a bad fd is an error.
    let r = unsafe { libc::ioctl(fd, request as libc::c_ulong, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `KVM_GET_DEVICE_ATTR` of a u64 attribute on `fd` (`/dev/kvm` for system attributes).
pub fn get_device_attr_u64(fd: RawFd, group: u32, attr: u64) -> io::Result<u64> {
    let mut value = 0u64;
    let mut arg = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: std::ptr::from_mut(&mut value) as u64,
    };
    // SAFETY: `arg` is a kvm_device_attr whose `addr` points to a u64 we own, the size
    // of every attribute of the groups read this way.
    unsafe { ioctl_ptr(fd, KVM_GET_DEVICE_ATTR, &mut arg) }?;
    Ok(value)
}

/// A TDX command on `fd` (the VM's or a vCPU's, as the command requires): the OS error
/// and the SEAMCALL status on failure.
///
/// # Safety
///
/// `data` must be the immediate or point to the structure command `id` takes, valid for
/// reads and writes.
pub unsafe fn tdx_command(
    fd: RawFd,
    id: u32,
    flags: u32,
    data: u64,
) -> Result<(), (io::Error, u64)> {
    let mut cmd = KvmTdxCmd {
        id,
        flags,
        data,
        hw_error: 0,
    };
    // SAFETY: `cmd` is a kvm_tdx_cmd and the caller vouches for `data`.
    match unsafe { ioctl_ptr(fd, KVM_MEMORY_ENCRYPT_OP, &mut cmd) } {
        Ok(_) => Ok(()),
        Err(e) => Err((e, cmd.hw_error)),
    }
}

/// `SEV_ISSUE_CMD(SNP_PLATFORM_STATUS)` on `/dev/sev` fd `fd`.
pub fn snp_platform_status(fd: RawFd) -> Result<SevUserDataSnpStatus, (io::Error, u32)> {
    let mut status = SevUserDataSnpStatus::default();
    let mut cmd = SevIssueCmd {
        cmd: SEV_CMD_SNP_PLATFORM_STATUS,
        data: std::ptr::from_mut(&mut status) as u64,
        error: 0,
    };
    // SAFETY: `cmd` is a sev_issue_cmd whose data points to a 32-byte
    // sev_user_data_snp_status we own.
    match unsafe { ioctl_ptr(fd, SEV_ISSUE_CMD, &mut cmd) } {
        Ok(_) => Ok(status),
        Err(e) => {
            let error = cmd.error;
            Err((e, error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    /// The table docs/kvm-uapi.md gives, checked once more at run time so that a test
    /// run lists it (the const asserts above already stop the build on a mismatch).
    #[test]
    fn ioctl_numbers_are_the_kernels() {
        let pinned: &[(&str, u64, u64)] = &[
            ("KVM_MEMORY_ENCRYPT_OP", KVM_MEMORY_ENCRYPT_OP, 0xc008_aeba),
            ("KVM_GET_DEVICE_ATTR", KVM_GET_DEVICE_ATTR, 0x4018_aee2),
            (
                "KVM_SET_MEMORY_ATTRIBUTES",
                KVM_SET_MEMORY_ATTRIBUTES,
                0x4020_aed2,
            ),
            (
                "KVM_CREATE_GUEST_MEMFD",
                KVM_CREATE_GUEST_MEMFD,
                0xc040_aed4,
            ),
            (
                "KVM_SET_USER_MEMORY_REGION2",
                KVM_SET_USER_MEMORY_REGION2,
                0x40a0_ae49,
            ),
            ("SEV_ISSUE_CMD", SEV_ISSUE_CMD, 0xc010_5300),
        ];
        for (name, ours, kernel) in pinned {
            assert_eq!(ours, kernel, "{name}");
        }
    }

    /// The sev crate's SNP_LAUNCH_FINISH structure is 56 bytes; the kernel's is 88,
    /// with HOST_DATA at byte 19. The structure nacre passes is the kernel's.
    #[test]
    fn launch_finish_is_the_kernels_88_bytes() {
        assert_eq!(size_of::<KvmSevSnpLaunchFinish>(), 88);
        let mut f = KvmSevSnpLaunchFinish::default();
        f.host_data[0] = 0xAB;
        f.flags = 0x1234;
        // SAFETY: reading the bytes of a plain-old-data structure.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&f).cast::<u8>(),
                size_of::<KvmSevSnpLaunchFinish>(),
            )
        };
        assert_eq!(bytes[18], 0, "vcek_disabled");
        assert_eq!(bytes[19], 0xAB, "host_data[0]");
        assert_eq!(&bytes[54..56], &0x1234u16.to_le_bytes(), "flags");
    }

    #[test]
    fn cpuid_tails_hold_their_entries_after_the_fixed_part() {
        let head = KvmTdxInitVm::new_zeroed();
        let e = CpuidEntry {
            function: 0x8000_0008,
            eax: 48 << 16,
            ..Default::default()
        };
        let mut buf = WithCpuid::with_entries(&head, &[e, e]);
        assert_eq!(buf.nent(), 2);
        assert_eq!(buf.entries(), vec![e, e]);
        let ptr = buf.as_mut_ptr();
        // The kernel finds nent at offset 256 and the first entry at 264.
        // SAFETY: the buffer holds 264 + 2 * 40 bytes.
        unsafe {
            assert_eq!(std::ptr::read_unaligned(ptr.add(256).cast::<u32>()), 2);
            assert_eq!(
                std::ptr::read_unaligned(ptr.add(264).cast::<u32>()),
                0x8000_0008
            );
            assert_eq!(
                std::ptr::read_unaligned(ptr.add(264 + 12).cast::<u32>()),
                48 << 16
            );
        }
        let caps = WithCpuid::<KvmTdxCapabilities>::new(&KvmTdxCapabilities::new_zeroed(), 6);
        assert_eq!((caps.nent(), caps.room()), (6, 6));
    }

    #[test]
    fn run_areas_read_and_write_little_endian_fields() {
        let mut raw = vec![0u8; run::SIZE];
        let mut area = RunArea::new(&mut raw).unwrap();
        area.set_u32(run::EXIT_REASON, exit::TDX);
        area.set_u64(run::TDX_RET, 0x8000_0000_0000_0003);
        assert_eq!(area.u32(run::EXIT_REASON), 40);
        assert_eq!(raw[run::TDX_RET + 7], 0x80);
        assert!(RunArea::new(&mut [0u8; 100]).is_none());
    }
}
