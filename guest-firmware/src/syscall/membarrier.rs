//! membarrier(2): memory barriers on every running thread of the process, or of every
//! process, as Linux's `kernel/sched/membarrier.c` provides them.
//!
//! On one vCPU a barrier on "every other running thread" has nobody to reach: each
//! command is complete once the caller's own accesses are ordered around the call,
//! which a full fence does (the kernel, too, returns at once with one CPU online or
//! one user of the address space, for all but the SYNC_CORE command). On several, the
//! other vCPUs are interrupted and waited for. What is kept exactly is the registration state, which decides the
//! answers: a private expedited barrier before its registration is EPERM, and
//! MEMBARRIER_CMD_GET_REGISTRATIONS reports what was registered, both as Linux does.

use super::errno::*;
use super::SysResult;
use crate::kernel::Kernel;

/// The commands (Linux `include/uapi/linux/membarrier.h`, `enum membarrier_cmd`).
pub const MEMBARRIER_CMD_QUERY: i32 = 0;
pub const MEMBARRIER_CMD_GLOBAL: i32 = 1 << 0;
pub const MEMBARRIER_CMD_GLOBAL_EXPEDITED: i32 = 1 << 1;
pub const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: i32 = 1 << 2;
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED: i32 = 1 << 3;
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: i32 = 1 << 4;
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 5;
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 6;
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 7;
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 8;
pub const MEMBARRIER_CMD_GET_REGISTRATIONS: i32 = 1 << 9;
/// The only flag (Linux `include/uapi/linux/membarrier.h`, `enum
/// membarrier_cmd_flag`): `cpu_id` names the CPU whose rseq critical section to
/// restart; only MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ takes it.
pub const MEMBARRIER_CMD_FLAG_CPU: u32 = 1 << 0;

/// What MEMBARRIER_CMD_QUERY answers: every command, as `MEMBARRIER_CMD_BITMASK` of
/// Linux `kernel/sched/membarrier.c` is on x86-64 (which has
/// CONFIG_ARCH_HAS_MEMBARRIER_SYNC_CORE) with CONFIG_RSEQ and no nohz_full CPUs.
pub const SUPPORTED: i32 = MEMBARRIER_CMD_GLOBAL
    | MEMBARRIER_CMD_GLOBAL_EXPEDITED
    | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED
    | MEMBARRIER_CMD_PRIVATE_EXPEDITED
    | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
    | MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE
    | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
    | MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ
    | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ
    | MEMBARRIER_CMD_GET_REGISTRATIONS;

/// The registration state of the address space (Linux `include/linux/sched/mm.h`,
/// the `MEMBARRIER_STATE_*` bits of `mm->membarrier_state`). A registration sets its
/// feature bits, then its READY bit; the barriers test the READY bits.
const STATE_PRIVATE_EXPEDITED_READY: u32 = 1 << 0;
const STATE_PRIVATE_EXPEDITED: u32 = 1 << 1;
const STATE_GLOBAL_EXPEDITED_READY: u32 = 1 << 2;
const STATE_GLOBAL_EXPEDITED: u32 = 1 << 3;
const STATE_PRIVATE_EXPEDITED_SYNC_CORE_READY: u32 = 1 << 4;
const STATE_PRIVATE_EXPEDITED_SYNC_CORE: u32 = 1 << 5;
const STATE_PRIVATE_EXPEDITED_RSEQ_READY: u32 = 1 << 6;
const STATE_PRIVATE_EXPEDITED_RSEQ: u32 = 1 << 7;

/// Which registration each pair of state bits reports (Linux
/// `membarrier_get_registrations`).
const REGISTRATIONS: [(u32, i32); 4] = [
    (
        STATE_GLOBAL_EXPEDITED | STATE_GLOBAL_EXPEDITED_READY,
        MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
    ),
    (
        STATE_PRIVATE_EXPEDITED | STATE_PRIVATE_EXPEDITED_READY,
        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
    ),
    (
        STATE_PRIVATE_EXPEDITED_SYNC_CORE | STATE_PRIVATE_EXPEDITED_SYNC_CORE_READY,
        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
    ),
    (
        STATE_PRIVATE_EXPEDITED_RSEQ | STATE_PRIVATE_EXPEDITED_RSEQ_READY,
        MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
    ),
];

/// The app's membarrier registrations.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Membarrier {
    state: u32,
}

impl Membarrier {
    /// Nothing registered.
    pub const fn new() -> Self {
        Self { state: 0 }
    }

    /// Command `cmd` with `flags`: its return value, or the errno Linux gives
    /// (`SYSCALL_DEFINE3(membarrier, ...)`). The barrier itself is the caller's.
    pub fn command(&mut self, cmd: i32, flags: u32) -> Result<u64, u64> {
        let flags_allowed = if cmd == MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ {
            MEMBARRIER_CMD_FLAG_CPU
        } else {
            0
        };
        if flags & !flags_allowed != 0 {
            return Err(EINVAL);
        }
        let result = match cmd {
            MEMBARRIER_CMD_QUERY => SUPPORTED,
            MEMBARRIER_CMD_GLOBAL | MEMBARRIER_CMD_GLOBAL_EXPEDITED => 0,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED => {
                self.register(STATE_GLOBAL_EXPEDITED_READY, STATE_GLOBAL_EXPEDITED)
            }
            MEMBARRIER_CMD_PRIVATE_EXPEDITED => self.ready(STATE_PRIVATE_EXPEDITED_READY)?,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED => {
                self.register(STATE_PRIVATE_EXPEDITED_READY, STATE_PRIVATE_EXPEDITED)
            }
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE => {
                self.ready(STATE_PRIVATE_EXPEDITED_SYNC_CORE_READY)?
            }
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE => self.register(
                STATE_PRIVATE_EXPEDITED_SYNC_CORE_READY,
                STATE_PRIVATE_EXPEDITED | STATE_PRIVATE_EXPEDITED_SYNC_CORE,
            ),
            MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ => {
                self.ready(STATE_PRIVATE_EXPEDITED_RSEQ_READY)?
            }
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ => self.register(
                STATE_PRIVATE_EXPEDITED_RSEQ_READY,
                STATE_PRIVATE_EXPEDITED | STATE_PRIVATE_EXPEDITED_RSEQ,
            ),
            MEMBARRIER_CMD_GET_REGISTRATIONS => REGISTRATIONS
                .iter()
                .filter(|(bits, _)| self.state & bits != 0)
                .fold(0, |mask, (_, cmd)| mask | cmd),
            _ => return Err(EINVAL),
        };
        Ok(result as u64)
    }

    /// A barrier that needs registration `ready` first: EPERM without it.
    fn ready(&self, ready: u32) -> Result<i32, u64> {
        if self.state & ready == 0 {
            return Err(EPERM);
        }
        Ok(0)
    }

    /// A registration: its feature bits `set`, then its `ready` bit (Linux
    /// `membarrier_register_private_expedited` and `_global_expedited`; registering
    /// again changes nothing).
    fn register(&mut self, ready: u32, set: u32) -> i32 {
        if self.state & ready != ready {
            self.state |= set | ready;
        }
        0
    }
}

/// membarrier(2); `cpu_id` only says which CPU's rseq critical section to restart.
/// With several vCPUs a barrier interrupts every other vCPU and waits until each has
/// taken the interrupt (the TLB shoot-down's round trip, `arch/smp.rs`): taking an
/// interrupt orders a vCPU's accesses before it after those before it, as the IPI
/// Linux sends does.
pub fn membarrier(k: &mut Kernel, cmd: i32, flags: u32, _cpu_id: i32) -> SysResult {
    let result = k.membarrier.command(cmd, flags)?;
    // The caller's accesses before the call are ordered before its accesses after.
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    let barrier = [
        MEMBARRIER_CMD_GLOBAL,
        MEMBARRIER_CMD_GLOBAL_EXPEDITED,
        MEMBARRIER_CMD_PRIVATE_EXPEDITED,
        MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
        MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
    ]
    .contains(&cmd);
    if barrier && crate::arch::smp::active() {
        k.flush_other_cpus();
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_lists_every_command_linux_x86_64_has() {
        let mut m = Membarrier::new();
        assert_eq!(m.command(MEMBARRIER_CMD_QUERY, 0), Ok(0x3FF));
        assert_eq!(m, Membarrier::new(), "a query registers nothing");
    }

    #[test]
    fn the_global_barriers_need_no_registration() {
        let mut m = Membarrier::new();
        assert_eq!(m.command(MEMBARRIER_CMD_GLOBAL, 0), Ok(0));
        assert_eq!(m.command(MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0), Ok(0));
    }

    #[test]
    fn private_expedited_barriers_are_eperm_until_registered() {
        for (barrier, register) in [
            (
                MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            ),
            (
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
            ),
            (
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
            ),
        ] {
            let mut m = Membarrier::new();
            assert_eq!(m.command(barrier, 0), Err(EPERM), "cmd {barrier:#x}");
            assert_eq!(m.command(register, 0), Ok(0));
            assert_eq!(m.command(barrier, 0), Ok(0), "cmd {barrier:#x}");
            let before = m;
            assert_eq!(m.command(register, 0), Ok(0), "again");
            assert_eq!(m, before, "registering again changes nothing");
        }
    }

    #[test]
    fn sync_core_and_rseq_registrations_do_not_enable_the_plain_barrier() {
        // Their registration sets the private expedited feature bit but only their own
        // READY bit, as Linux's `membarrier_register_private_expedited` does.
        let mut m = Membarrier::new();
        m.command(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0)
            .expect("registered");
        assert_eq!(m.command(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0), Err(EPERM));
        assert_eq!(
            m.command(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0),
            Err(EPERM)
        );
        assert_eq!(
            m.command(MEMBARRIER_CMD_GET_REGISTRATIONS, 0),
            Ok(0x50),
            "REGISTER_PRIVATE_EXPEDITED | REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, as Linux says"
        );
    }

    #[test]
    fn registrations_are_reported() {
        let mut m = Membarrier::new();
        assert_eq!(m.command(MEMBARRIER_CMD_GET_REGISTRATIONS, 0), Ok(0));
        for register in [
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
        ] {
            m.command(register, 0).expect("registered");
        }
        assert_eq!(m.command(MEMBARRIER_CMD_GET_REGISTRATIONS, 0), Ok(0x114));
    }

    #[test]
    fn unknown_commands_and_flags_are_einval() {
        let mut m = Membarrier::new();
        for cmd in [1 << 10, 3, -1, i32::MIN, 0x7FF] {
            assert_eq!(m.command(cmd, 0), Err(EINVAL), "cmd {cmd:#x}");
        }
        assert_eq!(m.command(MEMBARRIER_CMD_QUERY, 1), Err(EINVAL));
        assert_eq!(
            m.command(MEMBARRIER_CMD_PRIVATE_EXPEDITED, MEMBARRIER_CMD_FLAG_CPU),
            Err(EINVAL),
            "only the rseq barrier takes a CPU"
        );
        assert_eq!(
            m.command(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 2),
            Err(EINVAL)
        );
        // With a valid flag, the barrier still needs its registration.
        assert_eq!(
            m.command(
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                MEMBARRIER_CMD_FLAG_CPU
            ),
            Err(EPERM)
        );
        m.command(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0)
            .expect("registered");
        assert_eq!(
            m.command(
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                MEMBARRIER_CMD_FLAG_CPU
            ),
            Ok(0)
        );
    }
}
