//! Counters for every event the host sees, printed by `--stats` and written by
//! `--stats-json` (DESIGN.md 4).

use std::collections::BTreeMap;

/// All counters of one run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// VM exits by reason.
    pub exits: BTreeMap<&'static str, u64>,
    /// GHCB page-state-change calls (NAE) and MSR-protocol PSC requests.
    pub psc_calls: u64,
    /// 4 KiB PSC entries completed.
    pub psc_entries_4k: u64,
    /// 2 MiB PSC entries completed.
    pub psc_entries_2m: u64,
    /// PVALIDATEs at 4 KiB.
    pub pvalidate_4k: u64,
    /// PVALIDATEs at 2 MiB.
    pub pvalidate_2m: u64,
    /// PVALIDATEs answered FAIL_SIZEMISMATCH.
    pub pvalidate_size_mismatch: u64,
    /// Host MMU counters: RMP updates and PSMASHes, TDP faults, zaps and mappings,
    /// implicit conversions.
    pub mmu: crate::mmu::MmuStats,
    /// TDX counters (the emulated TDX platform only).
    pub tdx: Option<TdxRunStats>,
    /// SNP guest requests (attestation reports) served.
    pub guest_requests: u64,
    /// Hostcalls served, by operation.
    pub hostcalls: BTreeMap<&'static str, u64>,
    /// Unsupported syscalls the app made, by name.
    pub syscalls_unsupported: BTreeMap<String, u64>,
    /// Milliseconds from process start to the first hostcall (the app's first output
    /// or its exit): image loading, VM set-up, firmware boot and app start-up.
    pub boot_ms: f64,
    /// Wall time of the whole run in milliseconds.
    pub run_ms: f64,
}

/// The TDX platform's counters: its TDCALL handling and its MMU (S-EPT, mirror).
#[derive(Debug, Default, Clone, Copy)]
pub struct TdxRunStats {
    /// MapGPA counts (TDCALLs are `exits.tdcall`).
    pub counters: crate::platform::emulated_tdx::TdxCounters,
    /// The TDX MMU's counters.
    pub mmu: crate::mmu::tdx::TdxStats,
}

impl TdxRunStats {
    /// Dotted-key counters (`tdx.*`, `sept.*`, `tdp.*`, `memory.*`).
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        let m = &self.mmu;
        vec![
            ("tdx.accept_4k", m.accept_4k),
            ("tdx.accept_2m", m.accept_2m),
            ("tdx.accept_size_mismatch", m.accept_size_mismatch),
            ("tdx.accept_already", m.accept_already),
            ("tdx.map_gpa_calls", self.counters.map_gpa_calls),
            ("tdx.map_gpa_retries", self.counters.map_gpa_retries),
            ("tdx.mr_reports", self.counters.mr_reports),
            ("tdx.get_quotes", self.counters.get_quotes),
            ("tdx.map_gpa_pages", m.map_gpa_pages),
            ("sept.page_add", m.sept_page_add),
            ("sept.aug", m.sept_aug),
            ("sept.block", m.sept_block),
            ("sept.demote", m.sept_demote),
            ("sept.remove", m.sept_remove),
            ("mirror.frozen_retries", m.mirror_frozen_retries),
        ]
    }
}

impl Stats {
    /// Count one exit.
    pub fn exit(&mut self, reason: &'static str) {
        *self.exits.entry(reason).or_insert(0) += 1;
    }

    /// As a flat JSON object with dotted keys.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.common_json();
        if let (Some(t), Some(obj)) = (&self.tdx, v.as_object_mut()) {
            for (k, n) in t.entries() {
                obj.insert(k.into(), n.into());
            }
        }
        v
    }

    fn common_json(&self) -> serde_json::Value {
        serde_json::json!({
            "exits": self.exits,
            "psc.calls": self.psc_calls,
            "psc.entries_4k": self.psc_entries_4k,
            "psc.entries_2m": self.psc_entries_2m,
            "pvalidate.4k": self.pvalidate_4k,
            "pvalidate.2m": self.pvalidate_2m,
            "pvalidate.size_mismatch": self.pvalidate_size_mismatch,
            "rmp.psmash": self.mmu.psmash,
            "rmp.rmpupdate": self.mmu.rmpupdate,
            "tdp.faults": self.mmu.faults,
            "tdp.zaps": self.mmu.zaps,
            "tdp.maps_4k": self.mmu.maps_4k,
            "tdp.maps_2m": self.mmu.maps_2m,
            "tdp.maps_1g": self.mmu.maps_1g,
            "tdp.fault_retries": self.mmu.fault_retries,
            "memory.implicit_conversions": self.mmu.implicit_conversions,
            "memory.conversions": self.mmu.conversions,
            "attest.requests": self.guest_requests,
            "hostcalls": self.hostcalls,
            "syscalls.unsupported": self.syscalls_unsupported,
            "boot_ms": self.boot_ms,
            "run_ms": self.run_ms,
        })
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::from("nacre run statistics\n");
        s += &format!(
            "  {:<28} {:.3}\n  {:<28} {:.3}\n",
            "boot_ms", self.boot_ms, "run_ms", self.run_ms
        );
        for (k, v) in &self.exits {
            s += &format!("  exits.{k:<22} {v}\n");
        }
        for (k, v) in [
            ("psc.calls", self.psc_calls),
            ("psc.entries_4k", self.psc_entries_4k),
            ("psc.entries_2m", self.psc_entries_2m),
            ("pvalidate.4k", self.pvalidate_4k),
            ("pvalidate.2m", self.pvalidate_2m),
            ("pvalidate.size_mismatch", self.pvalidate_size_mismatch),
            ("rmp.psmash", self.mmu.psmash),
            ("rmp.rmpupdate", self.mmu.rmpupdate),
            ("tdp.faults", self.mmu.faults),
            ("tdp.zaps", self.mmu.zaps),
            ("tdp.maps_4k", self.mmu.maps_4k),
            ("tdp.maps_2m", self.mmu.maps_2m),
            ("tdp.maps_1g", self.mmu.maps_1g),
            ("tdp.fault_retries", self.mmu.fault_retries),
            ("memory.implicit_conversions", self.mmu.implicit_conversions),
            ("memory.conversions", self.mmu.conversions),
            ("attest.requests", self.guest_requests),
        ] {
            s += &format!("  {k:<28} {v}\n");
        }
        for (k, v) in &self.hostcalls {
            s += &format!("  hostcalls.{k:<18} {v}\n");
        }
        for (k, v) in self.tdx.iter().flat_map(TdxRunStats::entries) {
            s += &format!("  {k:<28} {v}\n");
        }
        if self.syscalls_unsupported.is_empty() {
            s += &format!("  {:<28} none\n", "syscalls.unsupported");
        }
        for (k, v) in &self.syscalls_unsupported {
            s += &format!("  {:<28} {v}\n", format!("syscalls.unsupported.{k}"));
        }
        s
    }
}

/// x86-64 syscall names for the numbers apps commonly call
/// (Linux `arch/x86/entry/syscalls/syscall_64.tbl`); others are shown by number.
pub fn syscall_name(nr: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (0, "read"),
        (1, "write"),
        (2, "open"),
        (3, "close"),
        (4, "stat"),
        (5, "fstat"),
        (6, "lstat"),
        (7, "poll"),
        (8, "lseek"),
        (9, "mmap"),
        (10, "mprotect"),
        (11, "munmap"),
        (12, "brk"),
        (13, "rt_sigaction"),
        (14, "rt_sigprocmask"),
        (15, "rt_sigreturn"),
        (16, "ioctl"),
        (17, "pread64"),
        (18, "pwrite64"),
        (19, "readv"),
        (20, "writev"),
        (21, "access"),
        (22, "pipe"),
        (23, "select"),
        (24, "sched_yield"),
        (25, "mremap"),
        (26, "msync"),
        (27, "mincore"),
        (28, "madvise"),
        (29, "shmget"),
        (30, "shmat"),
        (31, "shmctl"),
        (32, "dup"),
        (33, "dup2"),
        (34, "pause"),
        (35, "nanosleep"),
        (36, "getitimer"),
        (37, "alarm"),
        (38, "setitimer"),
        (39, "getpid"),
        (40, "sendfile"),
        (41, "socket"),
        (42, "connect"),
        (43, "accept"),
        (44, "sendto"),
        (45, "recvfrom"),
        (46, "sendmsg"),
        (47, "recvmsg"),
        (48, "shutdown"),
        (49, "bind"),
        (50, "listen"),
        (51, "getsockname"),
        (52, "getpeername"),
        (53, "socketpair"),
        (54, "setsockopt"),
        (55, "getsockopt"),
        (56, "clone"),
        (57, "fork"),
        (58, "vfork"),
        (59, "execve"),
        (60, "exit"),
        (61, "wait4"),
        (62, "kill"),
        (63, "uname"),
        (72, "fcntl"),
        (73, "flock"),
        (74, "fsync"),
        (75, "fdatasync"),
        (76, "truncate"),
        (77, "ftruncate"),
        (78, "getdents"),
        (79, "getcwd"),
        (80, "chdir"),
        (81, "fchdir"),
        (82, "rename"),
        (83, "mkdir"),
        (84, "rmdir"),
        (85, "creat"),
        (86, "link"),
        (87, "unlink"),
        (88, "symlink"),
        (89, "readlink"),
        (90, "chmod"),
        (91, "fchmod"),
        (92, "chown"),
        (93, "fchown"),
        (95, "umask"),
        (96, "gettimeofday"),
        (97, "getrlimit"),
        (98, "getrusage"),
        (99, "sysinfo"),
        (100, "times"),
        (102, "getuid"),
        (104, "getgid"),
        (105, "setuid"),
        (106, "setgid"),
        (107, "geteuid"),
        (108, "getegid"),
        (109, "setpgid"),
        (110, "getppid"),
        (111, "getpgrp"),
        (112, "setsid"),
        (115, "getgroups"),
        (118, "getresuid"),
        (120, "getresgid"),
        (121, "getpgid"),
        (124, "getsid"),
        (127, "rt_sigpending"),
        (128, "rt_sigtimedwait"),
        (130, "rt_sigsuspend"),
        (131, "sigaltstack"),
        (137, "statfs"),
        (138, "fstatfs"),
        (140, "getpriority"),
        (141, "setpriority"),
        (149, "mlock"),
        (151, "mlockall"),
        (157, "prctl"),
        (158, "arch_prctl"),
        (160, "setrlimit"),
        (186, "gettid"),
        (191, "getxattr"),
        (200, "tkill"),
        (201, "time"),
        (202, "futex"),
        (203, "sched_setaffinity"),
        (204, "sched_getaffinity"),
        (213, "epoll_create"),
        (217, "getdents64"),
        (218, "set_tid_address"),
        (228, "clock_gettime"),
        (229, "clock_getres"),
        (230, "clock_nanosleep"),
        (231, "exit_group"),
        (232, "epoll_wait"),
        (233, "epoll_ctl"),
        (234, "tgkill"),
        (257, "openat"),
        (258, "mkdirat"),
        (262, "newfstatat"),
        (263, "unlinkat"),
        (267, "readlinkat"),
        (269, "faccessat"),
        (270, "pselect6"),
        (271, "ppoll"),
        (273, "set_robust_list"),
        (281, "epoll_pwait"),
        (283, "timerfd_create"),
        (284, "eventfd"),
        (290, "eventfd2"),
        (291, "epoll_create1"),
        (292, "dup3"),
        (293, "pipe2"),
        (295, "preadv"),
        (296, "pwritev"),
        (302, "prlimit64"),
        (309, "getcpu"),
        (318, "getrandom"),
        (319, "memfd_create"),
        (324, "membarrier"),
        (326, "copy_file_range"),
        (332, "statx"),
        (334, "rseq"),
        (435, "clone3"),
        (439, "faccessat2"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == nr)
        .map_or_else(|| format!("syscall_{nr}"), |(_, name)| (*name).to_string())
}
