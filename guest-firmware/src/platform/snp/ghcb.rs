//! The GHCB: MSR protocol before the page exists, then the page itself. The GHCB
//! page is shared memory: requests are built in a private [`Ghcb`] value, copied in,
//! and the answer copied back out before anything reads it (trust assumption 2).

use super::instr::vmgexit;
use super::{ghcb_page_gpa, registered_ghcb, Snp, GHCB_REGISTERED, MSR_HOLDS_GHCB};
use crate::arch::gdt::cpu_index;
use crate::error::FwError;
use core::mem::{offset_of, size_of};
use core::sync::atomic::Ordering;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::snp::ghcb::{
    exit_code, ioio, Ghcb, GhcbField, GHCB_PROTOCOL_VERSION, GHCB_SHARED_BUFFER_SIZE,
};
use nacre_shared_abi::snp::msr_protocol::{self as mp, MsrRequest, MsrResponse};
use nacre_shared_abi::snp::MSR_GHCB;
use x86_64::registers::model_specific::Msr;
use zerocopy::IntoBytes;

/// One NAE call through the GHCB page, as page-state changes and guest requests make
/// them: [`Snp`] exchanges it with the host; unit tests answer as a host would.
pub trait GhcbCall {
    /// The private GHCB copy, cleared for a new request ([`clear_request`]).
    fn request(&mut self) -> &mut Ghcb;

    /// Make the NAE call built in [`Self::request`], exchanging the first
    /// `buffer_len` bytes of the shared buffer, and copy the answer back; an error if
    /// SW_EXITINFO1 reports one.
    fn call(&mut self, buffer_len: usize) -> Result<(), FwError>;

    /// The answer the last call copied back.
    fn answer(&self) -> &Ghcb;

    /// GPA of the GHCB page (SW_SCRATCH of a page-state change points into it).
    fn ghcb_gpa(&self) -> u64;
}

/// Clear every field of `g` a request may set (the others are never exchanged) and set
/// the protocol version, ready for a new request.
pub fn clear_request(g: &mut Ghcb) -> &mut Ghcb {
    g.valid_bitmap = [0; 2];
    g.rax = 0;
    g.rbx = 0;
    g.rcx = 0;
    g.rdx = 0;
    g.sw_exit_code = 0;
    g.sw_exit_info_1 = 0;
    g.sw_exit_info_2 = 0;
    g.sw_scratch = 0;
    g.xcr0 = 0;
    g.cpl = 0;
    g.protocol_version = GHCB_PROTOCOL_VERSION;
    g.ghcb_usage = 0;
    g
}

/// The error a call answered with SW_EXITINFO1 bits 31:0 set (GHCB specification
/// 4.1.7: a non-zero value means the host refused the call).
pub fn check_exit_info(g: &Ghcb) -> Result<(), FwError> {
    if g.sw_exit_info_1 & 0xFFFF_FFFF != 0 {
        return Err(FwError::Ghcb {
            exit_code: g.sw_exit_code,
            info1: g.sw_exit_info_1,
            info2: g.sw_exit_info_2,
        });
    }
    Ok(())
}

impl Snp {
    /// One MSR-protocol exchange; the response must carry `expect_info`.
    pub fn msr_protocol(
        &mut self,
        req: MsrRequest,
        expect_info: u64,
    ) -> Result<MsrResponse, FwError> {
        forget_msr();
        let mut msr = Msr::new(MSR_GHCB);
        // SAFETY: the GHCB MSR exists on every SEV-ES/SNP guest (GHCB specification
        // 2.3.1; the emulated host handles it too) and holds no pointer the CPU follows;
        // the request only asks the host to act on what it names, and the exit changes
        // nothing but that MSR and what the request names.
        let v = unsafe {
            msr.write(req.encode());
            vmgexit(self.backend);
            msr.read()
        };
        MsrResponse::decode(v, expect_info).map_err(|_| FwError::MsrProtocol)
    }

    /// Register this vCPU's GHCB page (which set-up made shared and mapped) with the
    /// host.
    pub fn register_ghcb(&mut self) -> Result<(), FwError> {
        let cpu = cpu_index();
        if cpu >= self.ghcb_pages {
            return Err(FwError::MsrProtocol);
        }
        let gfn = ghcb_page_gpa(cpu) >> 12;
        match self.msr_protocol(MsrRequest::RegisterGhcb { gfn }, mp::REG_GPA_RESP)? {
            MsrResponse::RegisterGhcb { gfn: echoed } if echoed == gfn => {}
            _ => return Err(FwError::MsrProtocol),
        }
        GHCB_REGISTERED[cpu].store(true, Ordering::Release);
        Ok(())
    }

    /// Make one NAE call with the request built in [`GhcbCall::request`]: copy the
    /// exchanged parts of it into the GHCB page, exit, copy the answer back and
    /// check `sw_exit_info_1`. Only the fields a request may set, the valid bitmap, the
    /// version/usage words and the first `buffer_len` bytes of the shared buffer are
    /// copied: the host reads nothing else (GHCB specification 2.3.1: it may only use
    /// fields marked valid, and a page-state change only its descriptor's entries), and
    /// every copied byte costs time where ring 0 is emulated.
    fn call_request(&mut self, buffer_len: usize) -> Result<(), FwError> {
        let Some((va, gpa)) = registered_ghcb(cpu_index()) else {
            return Err(FwError::MsrProtocol);
        };
        if buffer_len > GHCB_SHARED_BUFFER_SIZE {
            return Err(FwError::MsrProtocol);
        }
        let page = va as *mut u8;
        let buffer = offset_of!(Ghcb, shared_buffer);
        // SAFETY: `va` maps this vCPU's registered shared GHCB page (4 KiB) which no
        // Rust reference covers and no other vCPU uses; the host only writes it while
        // this vCPU is stopped in the exit below. The MSR write points the host at
        // that page. Every range lies inside the page.
        unsafe {
            for &(off, len) in REQUEST_RANGES.iter().chain(&[(buffer, buffer_len)]) {
                let src = self.scratch.as_bytes().as_ptr().add(off);
                core::ptr::copy_nonoverlapping(src, page.add(off), len);
            }
            point_msr_at(gpa);
            vmgexit(self.backend);
            for &(off, len) in REPLY_RANGES.iter().chain(&[(buffer, buffer_len)]) {
                let dst = self.scratch.as_mut_bytes().as_mut_ptr().add(off);
                core::ptr::copy_nonoverlapping(page.add(off) as *const u8, dst, len);
            }
        }
        check_exit_info(&self.scratch)
    }

    /// Ring the hostcall doorbell: a GHCB IOIO OUT of 32 bits to `HOSTCALL_PORT`
    /// carrying the hostcall area's page number.
    pub fn ring_hostcall_ioio(&mut self, page: u64) -> Result<(), FwError> {
        let g = self.request();
        g.rax = page;
        g.set_valid(GhcbField::Rax);
        g.set_exit(
            exit_code::IOIO,
            (u64::from(HOSTCALL_PORT) << ioio::PORT_SHIFT) | ioio::SIZE_32,
            0,
        );
        self.call_request(0)
    }
}

impl GhcbCall for Snp {
    fn request(&mut self) -> &mut Ghcb {
        clear_request(&mut self.scratch)
    }

    fn call(&mut self, buffer_len: usize) -> Result<(), FwError> {
        self.call_request(buffer_len)
    }

    fn answer(&self) -> &Ghcb {
        &self.scratch
    }

    fn ghcb_gpa(&self) -> u64 {
        ghcb_page_gpa(cpu_index())
    }
}

/// This vCPU's GHCB MSR no longer holds its GHCB page's GPA.
pub fn forget_msr() {
    MSR_HOLDS_GHCB[cpu_index()].store(false, Ordering::Relaxed);
}

/// Point this vCPU's GHCB MSR at its GHCB page (GPA `gpa`) unless it already holds
/// it: where the MSR is emulated, each write is an exit.
///
/// # Safety
/// `gpa` must be this vCPU's registered GHCB page.
unsafe fn point_msr_at(gpa: u64) {
    let holds = &MSR_HOLDS_GHCB[cpu_index()];
    if !holds.load(Ordering::Relaxed) {
        // SAFETY: the GHCB MSR holds no pointer the CPU follows; the value is the
        // page the caller registered.
        unsafe { Msr::new(MSR_GHCB).write(gpa) };
        holds.store(true, Ordering::Relaxed);
    }
}

/// Why an x2APIC register access through the GHCB failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMsrError {
    /// This vCPU has no registered GHCB yet.
    NoGhcb,
    /// The host answered SW_EXITINFO1 with an error (for an MSR, the #GP it would
    /// inject, GHCB specification 4.1.7): it refused the register.
    Refused { info1: u64, info2: u64 },
    /// A read's answer lacks RAX or RDX in the valid bitmap.
    NoValue,
}

/// The valid bitmap of `fields` (each field's bit is its offset / 8).
const fn bitmap(fields: &[GhcbField]) -> [u64; 2] {
    let mut map = [0u64; 2];
    let mut i = 0;
    while i < fields.len() {
        let bit = fields[i].offset() / 8;
        map[bit / 64] |= 1 << (bit % 64);
        i += 1;
    }
    map
}

/// The fields of an MSR read and of an MSR write request.
const MSR_READ_FIELDS: [u64; 2] = bitmap(&[
    GhcbField::Rcx,
    GhcbField::SwExitCode,
    GhcbField::SwExitInfo1,
    GhcbField::SwExitInfo2,
]);
const MSR_WRITE_FIELDS: [u64; 2] = bitmap(&[
    GhcbField::Rax,
    GhcbField::Rcx,
    GhcbField::Rdx,
    GhcbField::SwExitCode,
    GhcbField::SwExitInfo1,
    GhcbField::SwExitInfo2,
]);
/// The fields a read's answer must mark valid.
const MSR_READ_ANSWER: [u64; 2] = bitmap(&[GhcbField::Rax, GhcbField::Rdx]);

/// RDMSR (`write` = `None`) or WRMSR of `msr` through this vCPU's own GHCB page: the
/// MSR NAE event (SW_EXITCODE 0x7C, SW_EXITINFO1 0 to read or 1 to write, RCX the
/// MSR, EDX:EAX the value; docs/specs.md 1.3). Needs no kernel
/// lock: only this vCPU uses its page, and no interrupt arrives in the middle (the
/// firmware runs with interrupts off). Only the fields the event uses are written,
/// without clearing the page: every access costs where ring 0 is emulated. The answer
/// is copied out of the page before it is checked.
pub fn apic_msr(
    backend: super::Backend,
    msr: u32,
    write: Option<u64>,
) -> Result<u64, ApicMsrError> {
    let Some((va, gpa)) = registered_ghcb(cpu_index()) else {
        return Err(ApicMsrError::NoGhcb);
    };
    let page = va as *mut u8;
    let (info1, value, valid) = match write {
        Some(v) => (1, v, MSR_WRITE_FIELDS),
        None => (0, 0, MSR_READ_FIELDS),
    };
    let at = |field: GhcbField| field.offset();
    // SAFETY: `va` maps this vCPU's registered shared GHCB page (4 KiB), which no
    // Rust reference covers and which no other vCPU, and no other code of this one
    // while the call runs, uses; every offset is a field inside the page (layout
    // checked in shared-abi). Volatile: the host reads and writes the page.
    let (info1_out, info2_out, rax, rdx, answered) = unsafe {
        let put = |off: usize, v: u64| core::ptr::write_volatile(page.add(off).cast::<u64>(), v);
        let get = |off: usize| core::ptr::read_volatile(page.add(off).cast::<u64>());
        put(at(GhcbField::Rax), value & 0xFFFF_FFFF);
        put(at(GhcbField::Rdx), value >> 32);
        put(at(GhcbField::Rcx), u64::from(msr));
        put(at(GhcbField::SwExitCode), exit_code::MSR);
        put(at(GhcbField::SwExitInfo1), info1);
        put(at(GhcbField::SwExitInfo2), 0);
        let bitmap = offset_of!(Ghcb, valid_bitmap);
        put(bitmap, valid[0]);
        put(bitmap + 8, valid[1]);
        core::ptr::write_volatile(
            page.add(offset_of!(Ghcb, protocol_version)).cast::<u16>(),
            GHCB_PROTOCOL_VERSION,
        );
        core::ptr::write_volatile(page.add(offset_of!(Ghcb, ghcb_usage)).cast::<u32>(), 0);
        point_msr_at(gpa);
        vmgexit(backend);
        (
            get(at(GhcbField::SwExitInfo1)),
            get(at(GhcbField::SwExitInfo2)),
            get(at(GhcbField::Rax)),
            get(at(GhcbField::Rdx)),
            [get(bitmap), get(bitmap + 8)],
        )
    };
    if info1_out & 0xFFFF_FFFF != 0 {
        return Err(ApicMsrError::Refused {
            info1: info1_out,
            info2: info2_out,
        });
    }
    if write.is_some() {
        return Ok(0);
    }
    let valid = |i: usize| answered[i] & MSR_READ_ANSWER[i] == MSR_READ_ANSWER[i];
    if !(valid(0) && valid(1)) {
        return Err(ApicMsrError::NoValue);
    }
    Ok((rax & 0xFFFF_FFFF) | ((rdx & 0xFFFF_FFFF) << 32))
}

/// `(offset, length)` of the fields `first..=last` of the GHCB page (`last_len` bytes
/// for the last one).
const fn span(first: usize, last: usize, last_len: usize) -> (usize, usize) {
    (first, last + last_len - first)
}

/// The parts of the GHCB page a request writes: CPL (its quadword, 0x0C8..0x0D0), RAX
/// (0x1F8), RCX, RDX, RBX (0x308..0x320), SW_EXITCODE through SW_SCRATCH (0x390..0x3B0),
/// XCR0 and the valid bitmap (0x3E8..0x400), and the version/usage words
/// (0xFF8..0x1000). Layout: GHCB specification 2.3.1, table 3.
const REQUEST_RANGES: [(usize, usize); 6] = [
    (offset_of!(Ghcb, cpl) & !7, 8),
    span(offset_of!(Ghcb, rax), offset_of!(Ghcb, rax), 8),
    span(offset_of!(Ghcb, rcx), offset_of!(Ghcb, rbx), 8),
    span(
        offset_of!(Ghcb, sw_exit_code),
        offset_of!(Ghcb, sw_scratch),
        8,
    ),
    span(offset_of!(Ghcb, xcr0), offset_of!(Ghcb, valid_bitmap), 16),
    (size_of::<Ghcb>() - 8, 8),
];

/// The parts of the GHCB page a reply may carry: RAX, RCX, RDX, RBX, SW_EXITINFO1 and
/// SW_EXITINFO2 and the valid bitmap.
const REPLY_RANGES: [(usize, usize); 4] = [
    span(offset_of!(Ghcb, rax), offset_of!(Ghcb, rax), 8),
    span(offset_of!(Ghcb, rcx), offset_of!(Ghcb, rbx), 8),
    span(
        offset_of!(Ghcb, sw_exit_info_1),
        offset_of!(Ghcb, sw_exit_info_2),
        8,
    ),
    span(
        offset_of!(Ghcb, valid_bitmap),
        offset_of!(Ghcb, valid_bitmap),
        16,
    ),
];

const _: () = assert!(REQUEST_RANGES[0].0 == 0x0C8 && REQUEST_RANGES[2].0 == 0x308);
const _: () = assert!(REQUEST_RANGES[3].0 == 0x390 && REQUEST_RANGES[3].1 == 0x20);
const _: () = assert!(REQUEST_RANGES[4].0 == 0x3E8 && REQUEST_RANGES[4].1 == 0x18);
const _: () = assert!(REQUEST_RANGES[5].0 == 0xFF8 && REPLY_RANGES[2].0 == 0x398);

#[cfg(test)]
mod tests {
    use super::*;

    /// The MSR event's valid bitmaps name exactly the fields KVM checks
    /// (`sev_es_validate_vmgexit`: RCX, and RAX and RDX for a write) and the exit
    /// fields every call has.
    #[test]
    fn msr_bitmaps_name_the_events_fields() {
        let mut read = Ghcb::new_zeroed();
        read.rcx = 1;
        read.set_valid(GhcbField::Rcx);
        read.set_exit(exit_code::MSR, 0, 0);
        assert_eq!(MSR_READ_FIELDS, read.valid_bitmap);
        let mut write = read.clone();
        write.set_valid(GhcbField::Rax);
        write.set_valid(GhcbField::Rdx);
        assert_eq!(MSR_WRITE_FIELDS, write.valid_bitmap);
        let mut answer = Ghcb::new_zeroed();
        answer.set_valid(GhcbField::Rax);
        answer.set_valid(GhcbField::Rdx);
        assert_eq!(MSR_READ_ANSWER, answer.valid_bitmap);
    }
}
