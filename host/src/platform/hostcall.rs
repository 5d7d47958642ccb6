//! The host side of the hostcall area (shared-abi `hostcall.rs`), common to both
//! emulated platforms: only the doorbell that announces a call differs (a GHCB IOIO
//! exit on SNP, a TDVMCALL Instruction.IO on TDX). Everything read from the area is
//! guest-controlled and checked before use; a malformed call stops the guest. One
//! function serves each operation; the sockets of the Net hostcall are
//! [`super::net`]'s.

use super::net::{self, NetHost};
use super::Stop;
use crate::mmu::HypervisorMmu;
use crate::stats::{syscall_name, RunCounters};
use crate::vmm::memory::{GuestMemory, MemoryError};
use nacre_shared_abi::hostcall::{
    terminal_reply_size, ClockReply, EvidenceKind, HostcallHeader, HostcallOp, HOSTCALL_AREA_SIZE,
    HOSTCALL_DATA_OFFSET, POLL_ALL, POLL_FOREVER, POLL_STDERR_WRITABLE, POLL_STDIN_READABLE,
    POLL_STDOUT_WRITABLE, TERMINAL_NOT_A_TTY,
};
use nacre_shared_abi::layout::PAGE_SIZE_4K;
use nacre_shared_abi::net::SLEEP_WOKEN_BY_NET;
use std::io::{Read, Write};
use std::time::Instant;
use zerocopy::{FromBytes, IntoBytes};

/// EIO (Linux `asm-generic/errno-base.h`), for host I/O errors without an errno.
const EIO: u64 = 5;

/// How a test makes the host lie in its hostcall replies (`NACRE_TEST_HOSTILE`,
/// [`crate::platform::hostile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostileHostcall {
    /// Claim a console read returned one byte more than the guest asked for.
    OverlongRead,
    /// Return from sleeps at once.
    EarlyWake,
    /// Claim the first console write took one byte more than the guest sent.
    OverlongWrite,
    /// Report an fd ready in a poll's answer that the guest did not ask about.
    PollUnaskedFd,
    /// Answer each clock call with a time an hour before the previous answer (the
    /// first an hour before the host's clock).
    ClockBackwards,
    /// Claim the first socket receive returned one byte more than the guest asked for.
    NetOverlongRecv,
    /// Report every socket the guest asks the host to watch ready at once.
    NetFalseReadiness,
    /// Answer the first accept with the listening socket's own handle.
    NetForeignAccept,
    /// Report readiness for every socket right after the guest closed it.
    NetClosedEvents,
}

/// How far back [`HostileHostcall::ClockBackwards`] sets each clock answer.
const CLOCK_STEP_BACK_NS: u64 = 3600 * 1_000_000_000;

/// The host's side of the console and clocks.
#[derive(Debug, Default)]
pub struct HostcallHost {
    /// A misbehaviour a test asked for.
    pub hostile: Option<HostileHostcall>,
    /// When the firmware said it enters the app ([`HostcallOp::AppEntry`]): the end
    /// of the boot.
    pub app_entered: Option<Instant>,
    /// The vCPU's TSC frequency in kHz (KVM_GET_TSC_KHZ), 0 if unknown.
    pub tsc_khz: u64,
    /// The host asked this boot for attestation evidence (`nacre attest`).
    pub expect_evidence: bool,
    /// Reused buffer for data going through the area.
    buffer: Vec<u8>,
    /// Whether a lie told once ([`HostileHostcall::OverlongWrite`]) was told.
    lie_told: bool,
    /// The last clock answer (what [`HostileHostcall::ClockBackwards`] goes back from).
    last_clock: Option<ClockReply>,
    /// The guest's sockets (the Net hostcall), whose readiness also ends a Sleep early.
    pub net: NetHost,
}

/// What one operation's handler decided.
enum Reply {
    /// Write the header back (with `status` and `result` set) and resume the guest.
    Resume,
    /// Stop the VM.
    Stop(Stop),
}

/// Serve one hostcall from the area at `area` (a GPA without any platform bit). The
/// area must be memory `mmu` holds shared, or the guest broke the protocol.
pub fn serve(
    mem: &GuestMemory,
    mmu: &dyn HypervisorMmu,
    stats: &mut RunCounters,
    host: &mut HostcallHost,
    area: u64,
) -> Result<Option<Stop>, MemoryError> {
    let pages = HOSTCALL_AREA_SIZE / PAGE_SIZE_4K;
    let in_ram = area
        .checked_add(HOSTCALL_AREA_SIZE)
        .is_some_and(|e| e <= mem.size());
    if !in_ram || !mmu.is_shared(area / PAGE_SIZE_4K, pages) {
        return Ok(Some(Stop::ProtocolViolation(format!(
            "hostcall area at {area:#x} is not {HOSTCALL_AREA_SIZE} bytes of shared memory"
        ))));
    }
    let mut raw = [0u8; 64];
    mem.read(area, &mut raw)?;
    let Ok(mut h) = HostcallHeader::read_from_bytes(&raw) else {
        return Ok(None);
    };
    let op = match h.check_request() {
        Ok(op) => op,
        Err(e) => {
            return Ok(Some(Stop::ProtocolViolation(format!(
                "malformed hostcall: {e}"
            ))));
        }
    };
    h.status = 0;
    h.result = 0;
    let net_op = match op {
        HostcallOp::Net => match nacre_shared_abi::net::check_request(&h) {
            Ok(net_op) => Some(net_op),
            Err(e) => {
                return Ok(Some(Stop::ProtocolViolation(format!(
                    "malformed hostcall: {e}"
                ))));
            }
        },
        _ => None,
    };
    stats.hostcall(net_op.map_or(op_name(op), net::counter_name));
    let data = area + HOSTCALL_DATA_OFFSET;
    let reply = match op {
        HostcallOp::Write => write(mem, host, &mut h, data)?,
        HostcallOp::Read => read(mem, host, &mut h, data)?,
        HostcallOp::Exit => exit(mem, stats, &h, data)?,
        HostcallOp::Clock => clock(mem, host, &mut h, data)?,
        HostcallOp::Sleep => sleep(host, &mut h),
        HostcallOp::Poll => poll(host, &mut h),
        HostcallOp::Terminal => terminal(mem, &mut h, data)?,
        HostcallOp::Evidence => evidence(mem, host, &h, data)?,
        HostcallOp::AppEntry => app_entry(host),
        HostcallOp::Net => match net_op {
            Some(net_op) => {
                host.net.serve(mem, net_op, &mut h, data)?;
                lie_about_sockets(host, net_op, &mut h);
                Reply::Resume
            }
            None => Reply::Stop(Stop::ProtocolViolation(
                "malformed hostcall: a Net request without its operation".into(),
            )),
        },
    };
    match reply {
        Reply::Resume => {
            mem.write(area, h.as_bytes())?;
            Ok(None)
        }
        Reply::Stop(stop) => Ok(Some(stop)),
    }
}

/// The counter name of an operation (`hostcalls.NAME`; a Net operation counts as
/// its own, [`net::counter_name`]).
fn op_name(op: HostcallOp) -> &'static str {
    match op {
        HostcallOp::Write => "write",
        HostcallOp::Read => "read",
        HostcallOp::Exit => "exit",
        HostcallOp::Clock => "clock",
        HostcallOp::Sleep => "sleep",
        HostcallOp::Poll => "poll",
        HostcallOp::Terminal => "terminal",
        HostcallOp::Evidence => "evidence",
        HostcallOp::AppEntry => "app_entry",
        HostcallOp::Net => "net",
    }
}

/// The socket lies of the hostile-host tests ([`HostileHostcall`]), told after the
/// host served Net request `h` (`op`).
fn lie_about_sockets(
    host: &mut HostcallHost,
    op: nacre_shared_abi::net::NetOp,
    h: &mut HostcallHeader,
) {
    use nacre_shared_abi::net::{NetOp, EV_HUP, EV_IN, NET_ADDR_SIZE};
    let served = h.status == 0;
    match (host.hostile, op) {
        (Some(HostileHostcall::NetOverlongRecv), NetOp::Recv) if served && !host.lie_told => {
            h.result = h.len - NET_ADDR_SIZE + 1;
            host.lie_told = true;
        }
        (Some(HostileHostcall::NetForeignAccept), NetOp::Accept) if served && !host.lie_told => {
            h.result = u64::from(h.fd);
            host.lie_told = true;
        }
        (Some(HostileHostcall::NetFalseReadiness), NetOp::Arm) if served => {
            host.net.inject(h.fd, h.arg2 as u32);
        }
        (Some(HostileHostcall::NetClosedEvents), NetOp::Close) => {
            host.net.inject(h.fd, EV_IN | EV_HUP);
        }
        _ => {}
    }
}

/// AppEntry: the boot is over; the first one counts.
fn app_entry(host: &mut HostcallHost) -> Reply {
    host.app_entered.get_or_insert_with(Instant::now);
    Reply::Resume
}

fn os_errno(e: &std::io::Error) -> u64 {
    e.raw_os_error()
        .map_or(EIO, |c| u64::from(c.unsigned_abs()))
}

/// Write: `len` bytes to nacre's stdout or stderr, straight from the shared view
/// (copied through a buffer only if the view does not map the area now).
fn write(
    mem: &GuestMemory,
    host: &mut HostcallHost,
    h: &mut HostcallHeader,
    data: u64,
) -> Result<Reply, MemoryError> {
    let len = h.len;
    let fd = h.fd as i32;
    let mut done = 0u64;
    while done < len {
        match mem.write_shared_to(fd, data + done, len - done) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                return write_buffered(mem, host, h, data, done);
            }
            Err(e) => {
                if done == 0 {
                    h.status = os_errno(&e);
                }
                break;
            }
        }
    }
    h.result = done;
    if host.hostile == Some(HostileHostcall::OverlongWrite) && !host.lie_told {
        host.lie_told = true;
        h.result = h.len + 1;
    }
    Ok(Reply::Resume)
}

/// [`write`] through a private copy, from offset `done` of the data on.
fn write_buffered(
    mem: &GuestMemory,
    host: &mut HostcallHost,
    h: &mut HostcallHeader,
    data: u64,
    done: u64,
) -> Result<Reply, MemoryError> {
    let len = (h.len - done) as usize;
    host.buffer.resize(len, 0);
    mem.read(data + done, &mut host.buffer[..len])?;
    let bytes = &host.buffer[..len];
    let r = if h.fd == 1 {
        std::io::stdout().lock().write_all(bytes)
    } else {
        std::io::stderr().write_all(bytes)
    };
    match r {
        Ok(()) => h.result = h.len,
        Err(e) if done == 0 => h.status = os_errno(&e),
        Err(_) => h.result = done,
    }
    if host.hostile == Some(HostileHostcall::OverlongWrite) && !host.lie_told {
        host.lie_told = true;
        h.result = h.len + 1;
    }
    Ok(Reply::Resume)
}

/// Read: up to `len` bytes of nacre's stdin (0 at its end).
fn read(
    mem: &GuestMemory,
    host: &mut HostcallHost,
    h: &mut HostcallHeader,
    data: u64,
) -> Result<Reply, MemoryError> {
    let len = h.len as usize;
    host.buffer.resize(len, 0);
    match std::io::stdin().lock().read(&mut host.buffer[..len]) {
        Ok(n) => {
            mem.write(data, &host.buffer[..n])?;
            h.result = n as u64;
            if host.hostile == Some(HostileHostcall::OverlongRead) {
                h.result = h.len + 1;
            }
        }
        Err(e) => h.status = os_errno(&e),
    }
    Ok(Reply::Resume)
}

/// Exit: the app's status and its syscall counts: the unsupported ones, then (the
/// last `arg2` bytes, bounded by `check_request`) every syscall.
fn exit(
    mem: &GuestMemory,
    stats: &mut RunCounters,
    h: &HostcallHeader,
    data: u64,
) -> Result<Reply, MemoryError> {
    let len = h.len as usize;
    let mut bytes = vec![0u8; len];
    mem.read(data, &mut bytes)?;
    let (unsupported, all) = bytes.split_at(len - h.arg2 as usize);
    for (table, pairs) in [
        (&mut stats.syscalls_unsupported, unsupported),
        (&mut stats.syscalls, all),
    ] {
        // Sum by number first: a name is made once per number, not once per pair.
        let mut counts = std::collections::BTreeMap::<u32, u64>::new();
        for pair in pairs.chunks_exact(8) {
            let nr = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
            let count = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
            *counts.entry(nr).or_insert(0) += u64::from(count);
        }
        for (nr, count) in counts {
            if let Some(name) = nacre_shared_abi::hostcall::firmware_counter(nr) {
                *stats.firmware.entry(name).or_insert(0) += count;
                continue;
            }
            *table.entry(syscall_name(nr)).or_insert(0) += count;
        }
    }
    Ok(Reply::Stop(Stop::AppExit((h.arg & 0xFF) as u8)))
}

/// The largest evidence the host takes: an SNP report is 1184 bytes, a TDX quote
/// with its PEM certificate chain a few KiB.
const MAX_EVIDENCE: u64 = 64 << 10;

/// Evidence: what `nacre attest` asked for; anything else is a broken protocol.
fn evidence(
    mem: &GuestMemory,
    host: &HostcallHost,
    h: &HostcallHeader,
    data: u64,
) -> Result<Reply, MemoryError> {
    if !host.expect_evidence {
        return Ok(Reply::Stop(Stop::ProtocolViolation(
            "the guest sent attestation evidence nobody asked for".into(),
        )));
    }
    if h.len > MAX_EVIDENCE {
        return Ok(Reply::Stop(Stop::ProtocolViolation(format!(
            "attestation evidence of {} bytes (at most {MAX_EVIDENCE})",
            h.len
        ))));
    }
    let Ok(kind) = EvidenceKind::try_from(h.arg) else {
        return Ok(Reply::Stop(Stop::ProtocolViolation(format!(
            "attestation evidence of unknown kind {}",
            h.arg
        ))));
    };
    let mut bytes = vec![0u8; h.len as usize];
    mem.read(data, &mut bytes)?;
    Ok(Reply::Stop(Stop::Evidence { kind, bytes }))
}

/// Clock: the host's wall-clock and monotonic time and the TSC frequency.
fn clock(
    mem: &GuestMemory,
    host: &mut HostcallHost,
    h: &mut HostcallHeader,
    data: u64,
) -> Result<Reply, MemoryError> {
    let ns = |clock: libc::clockid_t| {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `t`.
        unsafe { libc::clock_gettime(clock, &mut t) };
        (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64)
    };
    let mut reply = ClockReply {
        realtime_ns: ns(libc::CLOCK_REALTIME),
        monotonic_ns: ns(libc::CLOCK_MONOTONIC),
        tsc_khz: host.tsc_khz,
    };
    if host.hostile == Some(HostileHostcall::ClockBackwards) {
        let last = host.last_clock.unwrap_or(reply);
        reply.realtime_ns = last.realtime_ns.saturating_sub(CLOCK_STEP_BACK_NS);
        reply.monotonic_ns = last.monotonic_ns.saturating_sub(CLOCK_STEP_BACK_NS);
    }
    host.last_clock = Some(reply);
    mem.write(data, reply.as_bytes())?;
    h.result = reply.as_bytes().len() as u64;
    Ok(Reply::Resume)
}

/// Sleep: `arg` nanoseconds (the guest checks the time that passed itself), or until
/// network events are queued ([`SLEEP_WOKEN_BY_NET`]).
fn sleep(host: &HostcallHost, h: &mut HostcallHeader) -> Reply {
    if host.hostile != Some(HostileHostcall::EarlyWake) && host.net.sleep(h.arg) {
        h.result = SLEEP_WOKEN_BY_NET;
    }
    Reply::Resume
}

/// Poll: wait up to `arg2` ns until a console condition in `arg` holds.
fn poll(host: &HostcallHost, h: &mut HostcallHeader) -> Reply {
    let wanted = [
        (0, libc::POLLIN, POLL_STDIN_READABLE),
        (1, libc::POLLOUT, POLL_STDOUT_WRITABLE),
        (2, libc::POLLOUT, POLL_STDERR_WRITABLE),
    ];
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut bits = Vec::new();
    for (fd, events, bit) in wanted {
        if h.arg & bit != 0 {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            bits.push(bit);
        }
    }
    let timeout_ms = if h.arg2 == POLL_FOREVER {
        -1
    } else {
        i32::try_from(h.arg2.div_ceil(1_000_000)).unwrap_or(i32::MAX)
    };
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n > 0 {
        for (p, bit) in fds.iter().zip(bits) {
            // End of input and errors count as readable: a read returns at once.
            if p.revents != 0 {
                h.result |= bit;
            }
        }
    }
    if host.hostile == Some(HostileHostcall::PollUnaskedFd) {
        // A condition of an fd the guest did not ask about.
        h.result |= POLL_ALL & !h.arg;
    }
    Reply::Resume
}

/// Terminal: TCGETS or TIOCGWINSZ on nacre's own fd 0, 1 or 2.
fn terminal(mem: &GuestMemory, h: &mut HostcallHeader, data: u64) -> Result<Reply, MemoryError> {
    let Some(size) = terminal_reply_size(h.arg) else {
        h.status = TERMINAL_NOT_A_TTY;
        return Ok(Reply::Resume);
    };
    let mut buf = [0u8; 64];
    // SAFETY: TCGETS writes a kernel `struct termios` (36 bytes) and TIOCGWINSZ a
    // `struct winsize` (8 bytes) into `buf`, which holds 64.
    let r = unsafe {
        libc::ioctl(
            h.fd as libc::c_int,
            h.arg as libc::c_ulong,
            buf.as_mut_ptr(),
        )
    };
    if r != 0 {
        h.status = TERMINAL_NOT_A_TTY;
        return Ok(Reply::Resume);
    }
    mem.write(data, &buf[..size as usize])?;
    h.result = size;
    Ok(Reply::Resume)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mmu::attributes::Kind;
    use crate::mmu::Access;
    use nacre_shared_abi::hostcall::hostcall_area_gpa;

    /// An MMU that holds all of RAM shared: the hostcall area is always usable.
    #[derive(Debug)]
    pub(crate) struct AllShared;

    impl HypervisorMmu for AllShared {
        fn pages(&self) -> u64 {
            0
        }
        fn access(&self, _: &GuestMemory, _: u64, _: Kind, _: bool) -> Result<Access, MemoryError> {
            Ok(Access::Ok { converted: false })
        }
        fn convert(
            &self,
            _: &GuestMemory,
            _: u64,
            _: u64,
            _: Kind,
        ) -> Result<Option<u64>, MemoryError> {
            Ok(Some(0))
        }
        fn is_shared(&self, _: u64, _: u64) -> bool {
            true
        }
        fn reachable(&self, _: u64) -> (bool, bool) {
            (false, true)
        }
        fn count_implicit_conversion(&self) {}
        fn counters(&self) -> Vec<(&'static str, u64)> {
            Vec::new()
        }
    }

    pub(crate) const RAM: u64 = 4 << 20;

    /// Serve `h` from a fresh area; the stop, if any, and the header written back.
    pub(crate) fn call(
        mem: &GuestMemory,
        stats: &mut RunCounters,
        host: &mut HostcallHost,
        h: HostcallHeader,
    ) -> (Option<Stop>, HostcallHeader) {
        let area = hostcall_area_gpa(RAM);
        mem.write(area, h.as_bytes()).unwrap();
        let stop = serve(mem, &AllShared, stats, host, area).unwrap();
        let mut raw = [0u8; 64];
        mem.read(area, &mut raw).unwrap();
        (stop, HostcallHeader::read_from_bytes(&raw).unwrap())
    }

    fn op(op: HostcallOp) -> HostcallHeader {
        HostcallHeader {
            op: op as u32,
            ..Default::default()
        }
    }

    #[test]
    fn the_boot_ends_when_the_firmware_enters_the_app_not_at_its_first_output() {
        let mem = GuestMemory::new(RAM).unwrap();
        let mut stats = RunCounters::default();
        let mut host = HostcallHost::default();
        // Output before the app is entered (the firmware's own messages) is not the end
        // of the boot; the first output used to be taken for it.
        let write = HostcallHeader {
            fd: 2,
            ..op(HostcallOp::Write)
        };
        assert_eq!(call(&mem, &mut stats, &mut host, write).0, None);
        assert_eq!(host.app_entered, None);
        let (stop, reply) = call(&mem, &mut stats, &mut host, op(HostcallOp::AppEntry));
        assert_eq!(stop, None);
        assert_eq!((reply.status, reply.result), (0, 0));
        let entered = host.app_entered.expect("the entry is recorded");
        // Only the first counts.
        call(&mem, &mut stats, &mut host, op(HostcallOp::AppEntry));
        assert_eq!(host.app_entered, Some(entered));
        assert_eq!(stats.hostcalls.get("app_entry"), Some(&2));
        // A malformed one stops the guest, in words.
        let bad = HostcallHeader {
            len: 5,
            ..op(HostcallOp::AppEntry)
        };
        let (stop, _) = call(&mem, &mut stats, &mut host, bad);
        assert_eq!(
            stop,
            Some(Stop::ProtocolViolation(
                "malformed hostcall: a data length of 5 bytes the operation cannot have".into()
            ))
        );
    }
}
