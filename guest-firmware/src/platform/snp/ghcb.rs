//! The GHCB: MSR protocol before the page exists, then the page itself. The GHCB
//! page is shared memory: requests are built in a private [`Ghcb`] value, copied in,
//! and the answer copied back out before anything reads it (trust assumption 2).

use super::instr::vmgexit;
use crate::arch::cpu::{rdmsr, wrmsr};
use crate::error::FwError;
use nacre_shared_abi::hostcall::{
    HostcallHeader, HostcallOp, HOSTCALL_DATA_OFFSET, HOSTCALL_MAX_DATA, HOSTCALL_PORT,
};
use nacre_shared_abi::snp::ghcb::{exit_code, ioio, Ghcb, GhcbField, GHCB_PROTOCOL_VERSION};
use nacre_shared_abi::snp::msr_protocol::{self as mp, MsrRequest, MsrResponse};
use nacre_shared_abi::snp::MSR_GHCB;
use zerocopy::{FromBytes, IntoBytes};

/// SEV-SNP platform state.
#[derive(Debug)]
pub struct Snp {
    /// Virtual address of the GHCB page (mapped shared), 0 before registration.
    ghcb_va: u64,
    ghcb_gpa: u64,
    msr_holds_ghcb: bool,
    hostcall_va: u64,
    hostcall_gpa: u64,
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
            hostcall_va: 0,
            hostcall_gpa: 0,
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
        self.hostcall_va = va;
        self.hostcall_gpa = gpa;
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
    fn ring_hostcall(&mut self) -> Result<(), FwError> {
        let page = self.hostcall_gpa >> 12;
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

    /// Send a hostcall with `data` and return the checked reply header.
    fn hostcall(
        &mut self,
        mut req: HostcallHeader,
        data: &[u8],
    ) -> Result<HostcallHeader, FwError> {
        if self.hostcall_va == 0 || data.len() as u64 > HOSTCALL_MAX_DATA {
            return Err(FwError::Hostcall);
        }
        req.len = req.len.max(data.len() as u64);
        let base = self.hostcall_va as *mut u8;
        // SAFETY: `hostcall_va` maps the shared hostcall buffer (HOSTCALL_BUFFER_SIZE
        // bytes) that no Rust reference covers; the lengths were checked above.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                base.add(HOSTCALL_DATA_OFFSET as usize),
                data.len(),
            );
            core::ptr::copy_nonoverlapping(
                req.as_bytes().as_ptr(),
                base,
                HOSTCALL_DATA_OFFSET as usize,
            );
        }
        self.ring_hostcall()?;
        let mut reply = [0u8; HOSTCALL_DATA_OFFSET as usize];
        // SAFETY: as above; copy the reply header into private memory before use.
        unsafe {
            core::ptr::copy_nonoverlapping(base as *const u8, reply.as_mut_ptr(), reply.len())
        };
        HostcallHeader::read_from_bytes(&reply).map_err(|_| FwError::Hostcall)
    }

    /// Write `data` to the host's fd 1 or 2. Returns bytes written or a Linux errno.
    pub fn console_write(&mut self, fd: u32, data: &[u8]) -> Result<u64, u64> {
        let mut done = 0u64;
        for chunk in data.chunks(HOSTCALL_MAX_DATA as usize) {
            let req = HostcallHeader {
                op: HostcallOp::Write as u32,
                fd,
                len: chunk.len() as u64,
                ..Default::default()
            };
            let reply = self.hostcall(req, chunk).map_err(|_| EIO)?;
            match reply.check_reply(&req) {
                Ok(Ok(n)) => {
                    done += n;
                    if n < chunk.len() as u64 {
                        break;
                    }
                }
                Ok(Err(errno)) => return if done > 0 { Ok(done) } else { Err(errno) },
                Err(_) => return Err(EIO),
            }
        }
        Ok(done)
    }

    /// Report the app's exit status (and unsupported-syscall counts as `u32` pairs).
    pub fn exit(&mut self, status: u8, unsupported: &[u8]) -> ! {
        let req = HostcallHeader {
            op: HostcallOp::Exit as u32,
            arg: u64::from(status),
            len: unsupported.len() as u64,
            ..Default::default()
        };
        let _ = self.hostcall(req, unsupported);
        // The host must not resume us after an exit; if it does, terminate.
        Self::terminate(mp::TERM_SET_NACRE, 0xFF)
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

/// EIO (Linux `asm-generic/errno-base.h`).
const EIO: u64 = 5;
