//! The GHCB: MSR protocol before the page exists, then the page itself. The GHCB
//! page is shared memory: requests are built in a private [`Ghcb`] value, copied in,
//! and the answer copied back out before anything reads it (trust assumption 2).

use super::instr::vmgexit;
use crate::arch::cpu::{rdmsr, wrmsr};
use crate::error::FwError;
use crate::platform::hostcall::HostcallBuffer;
use nacre_shared_abi::hostcall::{HostcallHeader, HOSTCALL_PORT};
use nacre_shared_abi::snp::ghcb::{exit_code, ioio, Ghcb, GhcbField, GHCB_PROTOCOL_VERSION};
use nacre_shared_abi::snp::msr_protocol::{self as mp, MsrRequest, MsrResponse};
use nacre_shared_abi::snp::MSR_GHCB;
use zerocopy::IntoBytes;

/// SEV-SNP platform state.
#[derive(Debug)]
pub struct Snp {
    /// Virtual address of the GHCB page (mapped shared), 0 before registration.
    ghcb_va: u64,
    ghcb_gpa: u64,
    msr_holds_ghcb: bool,
    hostcall: HostcallBuffer,
    /// The private copy of the GHCB that requests are built in and answers copied
    /// back to (kept, rather than made per call, to avoid clearing 4 KiB each time).
    scratch: Ghcb,
}

impl Snp {
    /// Platform state before the GHCB exists.
    pub fn new() -> Self {
        Self {
            ghcb_va: 0,
            ghcb_gpa: 0,
            msr_holds_ghcb: false,
            hostcall: HostcallBuffer::none(),
            scratch: Ghcb::new_zeroed(),
        }
    }

    /// One MSR-protocol exchange; the response must carry `expect_info`.
    pub fn msr_protocol(
        &mut self,
        req: MsrRequest,
        expect_info: u64,
    ) -> Result<MsrResponse, FwError> {
        self.msr_holds_ghcb = false;
        // SAFETY: the GHCB MSR is architectural on SNP (and handled by the emulated
        // host); the request only asks the host to act on what it names.
        let v = unsafe {
            wrmsr(MSR_GHCB, req.encode());
            vmgexit();
            rdmsr(MSR_GHCB)
        };
        MsrResponse::decode(v, expect_info).map_err(|_| FwError::MsrProtocol)
    }

    /// Ask the host to terminate the guest, then halt.
    pub fn terminate(set: u8, code: u8) -> ! {
        // SAFETY: termination request; nothing runs after it.
        unsafe {
            wrmsr(MSR_GHCB, MsrRequest::Terminate { set, code }.encode());
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

    /// Record the shared hostcall buffer.
    pub fn set_hostcall_buffer(&mut self, va: u64, gpa: u64) {
        self.hostcall.set(va, gpa);
    }

    /// The private GHCB copy, its exchanged save area cleared and the protocol
    /// version set, ready for a new request.
    pub fn request(&mut self) -> &mut Ghcb {
        let g = &mut self.scratch;
        g.as_mut_bytes()[..0x400].fill(0);
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
    /// check `sw_exit_info_1`. Only the save area (up to the X87 state GPA), the
    /// version/usage words and, when `with_buffer`, the shared buffer are copied: the
    /// rest of the page is reserved, and copying costs time where ring 0 is emulated.
    pub fn call_request(&mut self, with_buffer: bool) -> Result<(), FwError> {
        if self.ghcb_va == 0 {
            return Err(FwError::MsrProtocol);
        }
        let page = self.ghcb_va as *mut u8;
        // SAFETY: `ghcb_va` maps the registered shared GHCB page (4 KiB) which no
        // Rust reference covers; the host only writes it while this vCPU is stopped
        // in the exit below. The MSR write points the host at that page.
        unsafe {
            for &(off, len) in ghcb_ranges(with_buffer) {
                let src = self.scratch.as_bytes().as_ptr().add(off);
                core::ptr::copy_nonoverlapping(src, page.add(off), len);
            }
            if !self.msr_holds_ghcb {
                wrmsr(MSR_GHCB, self.ghcb_gpa);
                self.msr_holds_ghcb = true;
            }
            vmgexit();
            for &(off, len) in ghcb_ranges(with_buffer) {
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
    /// carrying the buffer's page number.
    fn ring_hostcall(&mut self, page: u64) -> Result<(), FwError> {
        let g = self.request();
        g.rax = page;
        g.set_valid(GhcbField::Rax);
        g.set_exit(
            exit_code::IOIO,
            (u64::from(HOSTCALL_PORT) << ioio::PORT_SHIFT) | ioio::SIZE_32,
            0,
        );
        self.call_request(false)
    }

    /// Send a hostcall with `data` and return the reply header (copied out).
    pub fn hostcall(
        &mut self,
        req: HostcallHeader,
        data: &[u8],
    ) -> Result<HostcallHeader, FwError> {
        let mut buf = core::mem::replace(&mut self.hostcall, HostcallBuffer::none());
        let r = buf.exchange(req, data, |page| self.ring_hostcall(page));
        self.hostcall = buf;
        r
    }
}

/// The parts of the GHCB page a call exchanges: the save area through SW_SCRATCH,
/// XCR0 and the valid bitmap (0x000..0x400), optionally the shared buffer
/// (0x800..0xFF0), and the version/usage words (0xFF8..0x1000).
fn ghcb_ranges(with_buffer: bool) -> &'static [(usize, usize)] {
    if with_buffer {
        &[(0, 0x400), (0x800, 0x7F0), (0xFF8, 8)]
    } else {
        &[(0, 0x400), (0xFF8, 8)]
    }
}
