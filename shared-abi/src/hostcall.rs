//! The hostcall area: console I/O, time, sleeping and exit between the firmware and the
//! host.
//!
//! The firmware converts the last [`HOSTCALL_AREA_SIZE`] bytes of guest RAM (one 2 MiB
//! page, so one page-state-change entry or one MapGPA chunk) to shared at boot. A
//! request is a [`HostcallHeader`] at offset 0 and its data at [`HOSTCALL_DATA_OFFSET`]
//! (the header has a page to itself, so the data pages can be mapped on their own). The
//! firmware rings the host with a GHCB IOIO exit (NAE 0x7B, an OUT of 32 bits) on SEV-SNP
//! or a TDVMCALL Instruction.IO write of 32 bits on TDX, to [`HOSTCALL_PORT`], whose data
//! is the area's GPA divided by 4 KiB; on hardware SNP this is exactly what a #VC
//! handler does for an `out`. The host copies the header out of shared memory, checks
//! it ([`HostcallHeader::check_request`]), performs the call and writes `status`,
//! `result` and any reply data back. The firmware copies the reply header into private
//! memory and checks it ([`HostcallHeader::check_reply`]) before it uses anything the
//! host wrote (docs/threat-model.md assumptions 1 and 2).
//!
//! Everything the host answers is untrusted, time included: the firmware bounds every
//! length, keeps its clocks monotonic itself and re-checks sleeps against its own
//! clock (`docs/threat-model.md`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// I/O port of the hostcall doorbell (a nacre choice, unused by any PC device).
pub const HOSTCALL_PORT: u16 = 0x0CA0;
/// Bytes in the hostcall area: one 2 MiB page at the end of guest RAM.
pub const HOSTCALL_AREA_SIZE: u64 = crate::layout::PAGE_SIZE_2M;
/// Offset of the data area from the start of the hostcall area.
pub const HOSTCALL_DATA_OFFSET: u64 = crate::layout::PAGE_SIZE_4K;
/// Largest data length of one request or reply.
pub const HOSTCALL_MAX_DATA: u64 = HOSTCALL_AREA_SIZE - HOSTCALL_DATA_OFFSET;

/// Where the firmware places the hostcall area in guest RAM of `ram_size` bytes (a
/// multiple of 2 MiB): its last 2 MiB.
pub const fn hostcall_area_gpa(ram_size: u64) -> u64 {
    ram_size - HOSTCALL_AREA_SIZE
}

/// Hostcall operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HostcallOp {
    /// Write `len` data bytes to `fd` (1 = stdout, 2 = stderr). `result` = bytes written.
    Write = 1,
    /// Read up to `len` bytes from `fd` 0 into the data area. `result` = bytes read
    /// (0 at end of input).
    Read = 2,
    /// The app exited; `arg` is its exit status (0..=255); the data are `(u32 syscall
    /// number, u32 count)` pairs: first those of the unsupported syscalls, then, in
    /// the last `arg2` bytes, those of every syscall the app made. No reply.
    Exit = 3,
    /// The host's clocks: a [`ClockReply`] in the data area (`len` is its size).
    Clock = 4,
    /// Sleep `arg` nanoseconds. The firmware checks the time that passed itself.
    /// `result` 0, or [`crate::net::SLEEP_WOKEN_BY_NET`] when the host ended the sleep
    /// early because network events are queued.
    Sleep = 5,
    /// Wait up to `arg2` nanoseconds ([`POLL_FOREVER`]: no limit) until one of the
    /// console conditions in the mask `arg` ([`POLL_STDIN_READABLE`], ...) holds;
    /// `result` = the mask of those that hold (a subset of `arg`).
    Poll = 6,
    /// Terminal ioctl `arg` ([`TCGETS`] or [`TIOCGWINSZ`]) on the host's `fd` (0..=2);
    /// the reply data is the kernel structure ([`TERMIOS_SIZE`] or [`WINSIZE_SIZE`]
    /// bytes, `result` = that size), or `status` ENOTTY when `fd` is no terminal.
    Terminal = 7,
    /// Attestation evidence the host asked for (`HostRequest`, boot.rs): `arg` is an
    /// [`EvidenceKind`], the data the evidence itself. No reply: the host stops the
    /// guest.
    Evidence = 8,
    /// The firmware has booted and enters the app now, once (the end of the boot time
    /// the host reports). No data (`len` 0); `result` 0.
    AppEntry = 9,
    /// A socket operation ([`crate::net`]): `arg` is the [`crate::net::NetOp`].
    Net = 10,
}

/// What [`HostcallOp::Evidence`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum EvidenceKind {
    /// An SEV-SNP ATTESTATION_REPORT (1184 bytes).
    SnpReport = 1,
    /// A TDX quote.
    TdxQuote = 2,
}

impl TryFrom<u64> for EvidenceKind {
    type Error = u64;
    fn try_from(v: u64) -> Result<Self, u64> {
        match v {
            1 => Ok(Self::SnpReport),
            2 => Ok(Self::TdxQuote),
            other => Err(other),
        }
    }
}

impl TryFrom<u32> for HostcallOp {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Write),
            2 => Ok(Self::Read),
            3 => Ok(Self::Exit),
            4 => Ok(Self::Clock),
            5 => Ok(Self::Sleep),
            6 => Ok(Self::Poll),
            7 => Ok(Self::Terminal),
            8 => Ok(Self::Evidence),
            9 => Ok(Self::AppEntry),
            10 => Ok(Self::Net),
            other => Err(other),
        }
    }
}

/// [`HostcallOp::Poll`] mask bit: fd 0 has input (or is at end of input).
pub const POLL_STDIN_READABLE: u64 = 1 << 0;
/// [`HostcallOp::Poll`] mask bit: fd 1 can take output.
pub const POLL_STDOUT_WRITABLE: u64 = 1 << 1;
/// [`HostcallOp::Poll`] mask bit: fd 2 can take output.
pub const POLL_STDERR_WRITABLE: u64 = 1 << 2;
/// Every [`HostcallOp::Poll`] mask bit.
pub const POLL_ALL: u64 = POLL_STDIN_READABLE | POLL_STDOUT_WRITABLE | POLL_STDERR_WRITABLE;
/// [`HostcallOp::Poll`] timeout meaning "no limit".
pub const POLL_FOREVER: u64 = u64::MAX;

/// `TCGETS` (Linux `include/uapi/asm-generic/ioctls.h`).
pub const TCGETS: u64 = 0x5401;
/// `TIOCGWINSZ` (Linux `include/uapi/asm-generic/ioctls.h`).
pub const TIOCGWINSZ: u64 = 0x5413;
/// Size of the kernel's `struct termios` that TCGETS fills on x86-64: four `tcflag_t`
/// (u32), `c_line` and `c_cc[NCCS]` with NCCS = 19 (Linux
/// `include/uapi/asm-generic/termbits.h`).
pub const TERMIOS_SIZE: u64 = 36;
/// Size of `struct winsize`: four `unsigned short` (Linux
/// `include/uapi/asm-generic/termios.h`).
pub const WINSIZE_SIZE: u64 = 8;

/// Linux ENOTTY (`include/uapi/asm-generic/errno-base.h`).
const ENOTTY: u64 = 25;

/// The reply data of [`HostcallOp::Clock`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ClockReply {
    /// The host's `CLOCK_REALTIME` in nanoseconds since the Unix epoch.
    pub realtime_ns: u64,
    /// The host's `CLOCK_MONOTONIC` in nanoseconds.
    pub monotonic_ns: u64,
    /// The frequency of the guest's TSC in kHz (KVM_GET_TSC_KHZ), 0 if unknown.
    pub tsc_khz: u64,
}

const _: () = assert!(core::mem::size_of::<ClockReply>() == 24);

/// The request/reply header at the start of the hostcall area.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HostcallHeader {
    /// [`HostcallOp`] as `u32`.
    pub op: u32,
    /// File descriptor for Write/Read/Terminal.
    pub fd: u32,
    /// Request data length (Write, Exit) or reply capacity (Read, Clock, Terminal).
    pub len: u64,
    /// Operation argument (exit status, sleep time, poll mask, ioctl request).
    pub arg: u64,
    /// Host reply: 0 on success, else a positive Linux errno.
    pub status: u64,
    /// Host reply: bytes transferred, or the ready mask of a Poll.
    pub result: u64,
    /// Second operation argument (the Poll timeout, the Exit data's split).
    pub arg2: u64,
    /// Reserved, zero.
    pub reserved: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<HostcallHeader>() == 64);
const _: () = assert!(core::mem::offset_of!(HostcallHeader, len) == 0x08);
const _: () = assert!(core::mem::offset_of!(HostcallHeader, status) == 0x18);
const _: () = assert!(core::mem::offset_of!(HostcallHeader, result) == 0x20);
const _: () = assert!(core::mem::offset_of!(HostcallHeader, arg2) == 0x28);
const _: () = assert!(HOSTCALL_DATA_OFFSET >= core::mem::size_of::<HostcallHeader>() as u64);

/// Why a hostcall request (host side) or reply (guest side) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostcallError {
    /// Unknown operation.
    BadOp(u32),
    /// Length larger than the data area, or not what the operation needs.
    BadLength(u64),
    /// File descriptor not allowed for this operation.
    BadFd(u32),
    /// An argument the operation does not define (poll mask bits, ioctl request).
    BadArg(u64),
    /// A reply claims more bytes than were asked for, a ready mask outside the
    /// request's, or an out-of-range status.
    BadReply,
}

impl core::fmt::Display for HostcallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadOp(op) => write!(f, "unknown operation {op}"),
            Self::BadLength(len) => {
                write!(f, "a data length of {len} bytes the operation cannot have")
            }
            Self::BadFd(fd) => write!(f, "file descriptor {fd}, which the operation does not take"),
            Self::BadArg(arg) => write!(f, "an argument the operation does not define ({arg:#x})"),
            Self::BadReply => f.write_str("a reply that does not answer the request"),
        }
    }
}

/// The reply data size of a Terminal request, `None` for an unknown request.
pub fn terminal_reply_size(request: u64) -> Option<u64> {
    match request {
        TCGETS => Some(TERMIOS_SIZE),
        TIOCGWINSZ => Some(WINSIZE_SIZE),
        _ => None,
    }
}

impl HostcallHeader {
    /// Host side: check a request copied out of shared memory.
    pub fn check_request(&self) -> Result<HostcallOp, HostcallError> {
        let op = HostcallOp::try_from(self.op).map_err(HostcallError::BadOp)?;
        if self.len > HOSTCALL_MAX_DATA {
            return Err(HostcallError::BadLength(self.len));
        }
        match op {
            HostcallOp::Write if self.fd != 1 && self.fd != 2 => Err(HostcallError::BadFd(self.fd)),
            HostcallOp::Read if self.fd != 0 => Err(HostcallError::BadFd(self.fd)),
            HostcallOp::Clock if self.len < core::mem::size_of::<ClockReply>() as u64 => {
                Err(HostcallError::BadLength(self.len))
            }
            HostcallOp::Poll if self.arg & !POLL_ALL != 0 => Err(HostcallError::BadArg(self.arg)),
            HostcallOp::Exit if self.arg2 > self.len => Err(HostcallError::BadLength(self.len)),
            HostcallOp::Terminal if self.fd > 2 => Err(HostcallError::BadFd(self.fd)),
            HostcallOp::Evidence if EvidenceKind::try_from(self.arg).is_err() => {
                Err(HostcallError::BadArg(self.arg))
            }
            HostcallOp::AppEntry if self.len != 0 => Err(HostcallError::BadLength(self.len)),
            HostcallOp::Net => crate::net::check_request(self).map(|_| op),
            HostcallOp::Terminal => match terminal_reply_size(self.arg) {
                None => Err(HostcallError::BadArg(self.arg)),
                Some(size) if self.len < size => Err(HostcallError::BadLength(self.len)),
                Some(_) => Ok(op),
            },
            _ => Ok(op),
        }
    }

    /// Guest side: check a reply (copied into private memory) against the request
    /// that was sent. Returns `result` (bytes transferred, or a Poll's ready mask), or
    /// the errno.
    pub fn check_reply(&self, request: &HostcallHeader) -> Result<Result<u64, u64>, HostcallError> {
        /// Largest Linux errno (include/linux/err.h MAX_ERRNO).
        const MAX_ERRNO: u64 = 4095;
        if self.status > MAX_ERRNO {
            return Err(HostcallError::BadReply);
        }
        let op = HostcallOp::try_from(request.op).map_err(HostcallError::BadOp)?;
        if self.status != 0 {
            // Only calls that can fail for a reason the app may see carry an errno.
            return match op {
                HostcallOp::Write | HostcallOp::Read | HostcallOp::Terminal | HostcallOp::Net => {
                    Ok(Err(self.status))
                }
                _ => Err(HostcallError::BadReply),
            };
        }
        let ok = match op {
            HostcallOp::Write | HostcallOp::Read => self.result <= request.len,
            HostcallOp::Clock => self.result == core::mem::size_of::<ClockReply>() as u64,
            HostcallOp::Terminal => Some(self.result) == terminal_reply_size(request.arg),
            HostcallOp::Poll => self.result & !request.arg == 0,
            HostcallOp::Sleep => self.result == 0 || self.result == crate::net::SLEEP_WOKEN_BY_NET,
            HostcallOp::AppEntry => self.result == 0,
            HostcallOp::Net => crate::net::reply_fits(request, self.result),
            HostcallOp::Exit | HostcallOp::Evidence => false,
        };
        if ok {
            Ok(Ok(self.result))
        } else {
            Err(HostcallError::BadReply)
        }
    }
}

/// Host side: the errno for a Terminal request on an fd that is no terminal.
pub const TERMINAL_NOT_A_TTY: u64 = ENOTTY;

/// The exit hostcall's data ends with the firmware's own counters, as pairs like the
/// syscall counts but numbered from here (far above any syscall number), in the
/// order of [`FIRMWARE_COUNTERS`].
pub const FIRMWARE_COUNTER_BASE: u32 = 0xFFFF_0000;

/// The names of the firmware's counters, as `nacre run --stats` shows them: threads
/// the app made, thread switches, time slices the timer ended, interrupts taken (all,
/// then the timer's, the wake-ups other vCPUs sent, any other vector), futex waits
/// that blocked, TLB shoot-downs (several vCPUs), and the guest memory the firmware
/// had handed out (to the app and to itself) at the exit and at most, in KiB.
pub const FIRMWARE_COUNTERS: [&str; 11] = [
    "threads.created",
    "threads.switches",
    "threads.preemptions",
    "interrupts",
    "interrupts.timer",
    "interrupts.wake",
    "interrupts.other",
    "futex.waits",
    "tlb.shootdowns",
    "memory.used_kib",
    "memory.peak_kib",
];

/// The name of the firmware counter numbered `nr` in the exit data, if it is one.
pub fn firmware_counter(nr: u32) -> Option<&'static str> {
    let i = nr.checked_sub(FIRMWARE_COUNTER_BASE)?;
    FIRMWARE_COUNTERS.get(usize::try_from(i).ok()?).copied()
}

#[cfg(test)]
mod tests {

    #[test]
    fn errors_read_as_words() {
        use std::string::ToString;
        assert_eq!(HostcallError::BadOp(99).to_string(), "unknown operation 99");
        assert_eq!(
            HostcallError::BadFd(7).to_string(),
            "file descriptor 7, which the operation does not take"
        );
        assert!(!HostcallError::BadReply.to_string().contains("BadReply"));
    }
    #[test]
    fn firmware_counters_are_named_above_every_syscall_number() {
        assert_eq!(
            firmware_counter(FIRMWARE_COUNTER_BASE),
            Some("threads.created")
        );
        assert_eq!(
            firmware_counter(FIRMWARE_COUNTER_BASE + 3),
            Some("interrupts")
        );
        assert_eq!(
            firmware_counter(FIRMWARE_COUNTER_BASE + 8),
            Some("tlb.shootdowns")
        );
        assert_eq!(
            firmware_counter(FIRMWARE_COUNTER_BASE + 10),
            Some("memory.peak_kib")
        );
        assert_eq!(firmware_counter(FIRMWARE_COUNTER_BASE + 11), None);
        assert_eq!(firmware_counter(435), None);
        assert_eq!(firmware_counter(u32::MAX), None);
    }
    use super::*;
    use proptest::prelude::*;

    /// Lengths around the data area's size.
    fn len() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..=64u64,
            0..=HOSTCALL_MAX_DATA,
            HOSTCALL_MAX_DATA - 2..=HOSTCALL_MAX_DATA + 2,
            any::<u64>(),
        ]
    }

    fn arg() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..=16u64,
            Just(TCGETS),
            Just(TIOCGWINSZ),
            Just(0x5402u64),
            any::<u64>(),
        ]
    }

    fn request() -> impl Strategy<Value = HostcallHeader> {
        (
            prop_oneof![4 => 0u32..11, 1 => any::<u32>()],
            prop_oneof![4 => 0u32..4, 1 => any::<u32>()],
            len(),
            arg(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(op, fd, len, arg, status, result, arg2)| HostcallHeader {
                op,
                fd,
                len,
                arg,
                status,
                result,
                arg2,
                reserved: [0; 2],
            })
    }

    /// Replies: status mostly 0 or near the errno limit; result mostly near what the
    /// request allows.
    fn reply_to(request: HostcallHeader) -> impl Strategy<Value = HostcallHeader> {
        let status = prop_oneof![3 => Just(0u64), 1 => 1u64..=4097, 1 => any::<u64>()];
        let result = prop_oneof![
            0..=request.len,
            Just(request.len.saturating_add(1)),
            (0u64..3).prop_map(move |d| request.len.wrapping_add(d)),
            Just(24u64),
            Just(TERMIOS_SIZE),
            Just(WINSIZE_SIZE),
            0..8u64,
            any::<u64>(),
        ];
        (status, result).prop_map(move |(status, result)| HostcallHeader {
            status,
            result,
            ..request
        })
    }

    proptest! {
        #[test]
        fn op_round_trips(v in prop_oneof![0u32..10, any::<u32>()]) {
            match HostcallOp::try_from(v) {
                Ok(op) => prop_assert_eq!(op as u32, v),
                Err(e) => {
                    prop_assert_eq!(e, v);
                    prop_assert!(!(1..=9).contains(&v));
                }
            }
        }

        #[test]
        fn accepted_requests_fit_and_are_well_formed(h in request()) {
            match h.check_request() {
                Ok(op) => {
                    prop_assert_eq!(op as u32, h.op);
                    prop_assert!(h.len <= HOSTCALL_MAX_DATA);
                    prop_assert!(HOSTCALL_DATA_OFFSET + h.len <= HOSTCALL_AREA_SIZE);
                    match op {
                        HostcallOp::Write => prop_assert!(h.fd == 1 || h.fd == 2),
                        HostcallOp::Read => prop_assert_eq!(h.fd, 0),
                        HostcallOp::Clock => prop_assert!(h.len >= 24),
                        HostcallOp::Poll => prop_assert_eq!(h.arg & !POLL_ALL, 0),
                        HostcallOp::Terminal => {
                            prop_assert!(h.fd <= 2);
                            let size = terminal_reply_size(h.arg);
                            prop_assert!(size.is_some_and(|s| h.len >= s));
                        }
                        HostcallOp::Evidence => {
                            prop_assert!(EvidenceKind::try_from(h.arg).is_ok());
                        }
                        HostcallOp::Exit => prop_assert!(h.arg2 <= h.len),
                        HostcallOp::AppEntry => prop_assert_eq!(h.len, 0),
                        HostcallOp::Net => prop_assert!(crate::net::check_request(&h).is_ok()),
                        HostcallOp::Sleep => {}
                    }
                }
                Err(HostcallError::BadOp(op)) => {
                    prop_assert_eq!(op, h.op);
                    prop_assert!(!(1..=10).contains(&op));
                }
                Err(HostcallError::BadLength(len)) => prop_assert_eq!(len, h.len),
                Err(HostcallError::BadFd(fd)) => prop_assert_eq!(fd, h.fd),
                Err(HostcallError::BadArg(a)) => {
                    // A Net request's scalar is `arg2`.
                    prop_assert!(a == h.arg || (h.op == HostcallOp::Net as u32 && a == h.arg2));
                }
                Err(HostcallError::BadReply) => prop_assert!(false, "BadReply from check_request"),
            }
        }

        #[test]
        fn replies_stay_within_what_was_asked(
            (request, reply) in request()
                .prop_filter("valid requests", |r| r.check_request().is_ok())
                .prop_flat_map(|r| (Just(r), reply_to(r))),
        ) {
            match reply.check_reply(&request) {
                Ok(Ok(n)) => {
                    prop_assert_eq!(n, reply.result);
                    prop_assert_eq!(reply.status, 0);
                    match HostcallOp::try_from(request.op) {
                        Ok(HostcallOp::Write | HostcallOp::Read) => prop_assert!(n <= request.len),
                        Ok(HostcallOp::Clock) => prop_assert_eq!(n, 24),
                        Ok(HostcallOp::Terminal) => {
                            prop_assert_eq!(Some(n), terminal_reply_size(request.arg));
                            prop_assert!(n <= request.len);
                        }
                        Ok(HostcallOp::Poll) => prop_assert_eq!(n & !request.arg, 0),
                        Ok(HostcallOp::Sleep) => prop_assert!(n <= crate::net::SLEEP_WOKEN_BY_NET),
                        Ok(HostcallOp::AppEntry) => prop_assert_eq!(n, 0),
                        Ok(HostcallOp::Net) => {
                            prop_assert!(crate::net::reply_fits(&request, n));
                        }
                        Ok(HostcallOp::Exit | HostcallOp::Evidence) | Err(_) => {
                            prop_assert!(false, "no reply expected")
                        }
                    }
                }
                Ok(Err(errno)) => {
                    prop_assert!((1..=4095).contains(&errno));
                    prop_assert_eq!(errno, reply.status);
                    prop_assert!(matches!(
                        HostcallOp::try_from(request.op),
                        Ok(HostcallOp::Write
                            | HostcallOp::Read
                            | HostcallOp::Terminal
                            | HostcallOp::Net)
                    ));
                }
                Err(e) => prop_assert_eq!(e, HostcallError::BadReply),
            }
        }

        #[test]
        fn header_bytes_round_trip(h in request()) {
            let bytes = h.as_bytes();
            prop_assert_eq!(bytes.len(), 64);
            prop_assert_eq!(&bytes[0x18..0x20], &h.status.to_le_bytes());
            prop_assert_eq!(&bytes[0x20..0x28], &h.result.to_le_bytes());
            prop_assert_eq!(&bytes[0x28..0x30], &h.arg2.to_le_bytes());
            prop_assert_eq!(HostcallHeader::read_from_bytes(bytes), Ok(h));
        }
    }

    #[test]
    fn the_area_is_the_last_2_mib_of_ram() {
        assert_eq!(hostcall_area_gpa(128 << 20), (128 << 20) - (2 << 20));
        assert_eq!(HOSTCALL_MAX_DATA, (2 << 20) - 4096);
    }
}
