//! The GHCB: MSR protocol before the page exists, then the page itself. The GHCB
//! page is shared memory: requests are built in a private [`Ghcb`] value, copied in,
//! and the answer copied back out before anything reads it (trust assumption 2).

use super::instr::vmgexit;
use super::Snp;
use crate::error::FwError;
use core::mem::{offset_of, size_of};
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
        self.msr_holds_ghcb = false;
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

    /// Register the (already shared and mapped) GHCB page with the host.
    pub fn register_ghcb(&mut self, va: u64, gpa: u64) -> Result<(), FwError> {
        let gfn = gpa >> 12;
        match self.msr_protocol(MsrRequest::RegisterGhcb { gfn }, mp::REG_GPA_RESP)? {
            MsrResponse::RegisterGhcb { gfn: echoed } if echoed == gfn => {}
            _ => return Err(FwError::MsrProtocol),
        }
        self.ghcb_va = va;
        self.ghcb_gpa = gpa;
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
        if self.ghcb_va == 0 || buffer_len > GHCB_SHARED_BUFFER_SIZE {
            return Err(FwError::MsrProtocol);
        }
        let page = self.ghcb_va as *mut u8;
        let buffer = offset_of!(Ghcb, shared_buffer);
        // SAFETY: `ghcb_va` maps the registered shared GHCB page (4 KiB) which no
        // Rust reference covers; the host only writes it while this vCPU is stopped
        // in the exit below. The MSR write points the host at that page. Every range
        // lies inside the page.
        unsafe {
            for &(off, len) in REQUEST_RANGES.iter().chain(&[(buffer, buffer_len)]) {
                let src = self.scratch.as_bytes().as_ptr().add(off);
                core::ptr::copy_nonoverlapping(src, page.add(off), len);
            }
            if !self.msr_holds_ghcb {
                Msr::new(MSR_GHCB).write(self.ghcb_gpa);
                self.msr_holds_ghcb = true;
            }
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
        self.ghcb_gpa
    }
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
