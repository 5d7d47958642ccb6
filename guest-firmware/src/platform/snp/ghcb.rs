//! The GHCB: MSR protocol before the page exists, then the page itself. The GHCB
//! page is shared memory: requests are built in a private [`Ghcb`] value, copied in,
//! and the answer copied back out before anything reads it (trust assumption 2).

use super::instr::vmgexit;
use crate::error::FwError;
use nacre_shared_abi::hostcall::HOSTCALL_PORT;
use nacre_shared_abi::snp::ghcb::{
    exit_code, ioio, Ghcb, GhcbField, GHCB_PROTOCOL_VERSION, GHCB_SHARED_BUFFER_SIZE,
};
use nacre_shared_abi::snp::msr_protocol::{self as mp, MsrRequest, MsrResponse};
use nacre_shared_abi::snp::MSR_GHCB;
use x86_64::registers::model_specific::Msr;
use zerocopy::IntoBytes;

/// SEV-SNP platform state.
#[derive(Debug)]
pub struct Snp {
    /// Virtual address of the GHCB page (mapped shared), 0 before registration.
    ghcb_va: u64,
    ghcb_gpa: u64,
    msr_holds_ghcb: bool,
    /// The private copy of the GHCB that requests are built in and answers copied
    /// back to (kept, rather than made per call, to avoid clearing 4 KiB each time).
    scratch: Ghcb,
    /// Guest messages to the security processor (VMPCK0 from the secrets page).
    pub channel: super::guest_request::GuestChannel,
}

impl Snp {
    /// Platform state before the GHCB exists.
    pub fn new() -> Self {
        Self {
            ghcb_va: 0,
            ghcb_gpa: 0,
            msr_holds_ghcb: false,
            scratch: Ghcb::new_zeroed(),
            channel: super::guest_request::GuestChannel::none(),
        }
    }

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
            vmgexit();
            msr.read()
        };
        MsrResponse::decode(v, expect_info).map_err(|_| FwError::MsrProtocol)
    }

    /// Ask the host to terminate the guest, then halt.
    pub fn terminate(set: u8, code: u8) -> ! {
        // SAFETY: a termination request (GHCB specification 2.3.1, "Termination
        // Request"); nothing of the guest runs after it.
        unsafe {
            Msr::new(MSR_GHCB).write(MsrRequest::Terminate { set, code }.encode());
            vmgexit();
        }
        crate::arch::cpu::halt_forever()
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

    /// GPA of the GHCB page.
    pub fn ghcb_gpa(&self) -> u64 {
        self.ghcb_gpa
    }

    /// The private GHCB copy with every field a request may set cleared (the others
    /// are never exchanged) and the protocol version set, ready for a new request.
    pub fn request(&mut self) -> &mut Ghcb {
        let g = &mut self.scratch;
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

    /// The private GHCB copy as the last call left it.
    pub fn answer(&self) -> &Ghcb {
        &self.scratch
    }

    /// Make one NAE call with the request built in [`Snp::request`]: copy the
    /// exchanged parts of it into the GHCB page, exit, copy the answer back and
    /// check `sw_exit_info_1`. Only the fields a request may set, the valid bitmap, the
    /// version/usage words and the first `buffer_len` bytes of the shared buffer are
    /// copied: the host reads nothing else (GHCB specification 2.3.1: it may only use
    /// fields marked valid, and a page-state change only its descriptor's entries), and
    /// every copied byte costs time where ring 0 is emulated.
    pub fn call_request(&mut self, buffer_len: usize) -> Result<(), FwError> {
        if self.ghcb_va == 0 || buffer_len > GHCB_SHARED_BUFFER_SIZE {
            return Err(FwError::MsrProtocol);
        }
        let page = self.ghcb_va as *mut u8;
        let buffer = core::mem::offset_of!(Ghcb, shared_buffer);
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
            vmgexit();
            for &(off, len) in REPLY_RANGES.iter().chain(&[(buffer, buffer_len)]) {
                let dst = self.scratch.as_mut_bytes().as_mut_ptr().add(off);
                core::ptr::copy_nonoverlapping(page.add(off) as *const u8, dst, len);
            }
        }
        let g = &self.scratch;
        if g.sw_exit_info_1 & 0xFFFF_FFFF != 0 {
            return Err(FwError::Ghcb {
                exit_code: g.sw_exit_code,
                info1: g.sw_exit_info_1,
                info2: g.sw_exit_info_2,
            });
        }
        Ok(())
    }

    /// Ring the hostcall doorbell: a GHCB IOIO OUT of 32 bits to `HOSTCALL_PORT`
    /// carrying the hostcall area's page number.
    pub fn ring_hostcall(&mut self, page: u64) -> Result<(), FwError> {
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

impl Default for Snp {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of the GHCB page a request writes: CPL (0x0C8..0x0D0 holds it), RAX
/// (0x1F8), RCX, RDX, RBX (0x308..0x320), SW_EXITCODE through SW_SCRATCH (0x390..0x3B0),
/// XCR0 and the valid bitmap (0x3E8..0x400), and the version/usage words
/// (0xFF8..0x1000).
const REQUEST_RANGES: [(usize, usize); 6] = [
    (0x0C8, 8),
    (0x1F8, 8),
    (0x308, 0x18),
    (0x390, 0x20),
    (0x3E8, 0x18),
    (0xFF8, 8),
];

/// The parts of the GHCB page a reply may carry: RAX, RCX, RDX, RBX, SW_EXITINFO1 and
/// SW_EXITINFO2 and the valid bitmap.
const REPLY_RANGES: [(usize, usize); 4] = [(0x1F8, 8), (0x308, 0x18), (0x398, 0x10), (0x3F0, 0x10)];
