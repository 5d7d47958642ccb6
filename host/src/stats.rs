//! Counters for every event the host sees, printed by `--stats` and written by
//! `--stats-json`.
//!
//! Each subsystem keeps one structure of its own counters (the exit loop and the
//! hostcalls [`RunCounters`], the hypervisor MMU, the platform's protocol handlers)
//! and names them with dotted keys through [`Counters`]; a run's [`Stats`] collects
//! those entries once at the end, whatever the platform.

use std::collections::BTreeMap;

/// A subsystem's counters, as `(dotted key, value)` pairs in a stable order.
pub trait Counters {
    /// The counters.
    fn entries(&self) -> Vec<(&'static str, u64)>;
}

/// The counters every platform keeps: exits by reason, hostcalls by operation, and
/// the syscalls the app made (all, and the unsupported ones), as the firmware
/// reported them.
#[derive(Debug, Default, Clone)]
pub struct RunCounters {
    /// VM exits by reason.
    pub exits: BTreeMap<&'static str, u64>,
    /// Hostcalls served, by operation.
    pub hostcalls: BTreeMap<&'static str, u64>,
    /// Unsupported syscalls the app made, by name.
    pub syscalls_unsupported: BTreeMap<String, u64>,
    /// Every syscall the app made, by name.
    pub syscalls: BTreeMap<String, u64>,
    /// The firmware's own counters (threads, switches, interrupts), by name.
    pub firmware: BTreeMap<&'static str, u64>,
}

impl RunCounters {
    /// Count one exit.
    pub fn exit(&mut self, reason: &'static str) {
        *self.exits.entry(reason).or_insert(0) += 1;
    }

    /// Count one hostcall.
    pub fn hostcall(&mut self, op: &'static str) {
        *self.hostcalls.entry(op).or_insert(0) += 1;
    }
}

/// All counters of one run.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// The VM's vCPUs (`--cpus`); the other counters are totals over all of them.
    pub cpus: u32,
    /// Exits, hostcalls and unsupported syscalls.
    pub run: RunCounters,
    /// The platform's and its MMU's counters, in the order they print.
    pub counters: Vec<(&'static str, u64)>,
    /// Milliseconds from process start until the firmware entered the app (0 when it
    /// never did): image loading, VM set-up and the firmware's boot, not the app's own
    /// start-up.
    pub boot_ms: f64,
    /// Wall time of the whole run in milliseconds.
    pub run_ms: f64,
}

impl Stats {
    /// The value of the counter `key`, if this run has it.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// As a flat JSON object with dotted keys; `exits`, `hostcalls`, `syscalls` and
    /// `syscalls.unsupported` are objects; `syscalls.total` is their sum; `cpus` is the
    /// number of vCPUs.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("cpus".into(), self.cpus.into());
        obj.insert("exits".into(), serde_json::json!(self.run.exits));
        for (k, v) in &self.counters {
            obj.insert((*k).into(), (*v).into());
        }
        obj.insert("hostcalls".into(), serde_json::json!(self.run.hostcalls));
        for (k, v) in &self.run.firmware {
            obj.insert((*k).into(), (*v).into());
        }
        obj.insert("syscalls".into(), serde_json::json!(self.run.syscalls));
        obj.insert(
            "syscalls.total".into(),
            self.run.syscalls.values().sum::<u64>().into(),
        );
        obj.insert(
            "syscalls.unsupported".into(),
            serde_json::json!(self.run.syscalls_unsupported),
        );
        obj.insert("boot_ms".into(), self.boot_ms.into());
        obj.insert("run_ms".into(), self.run_ms.into());
        serde_json::Value::Object(obj)
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::from("nacre run statistics\n");
        s += &format!("  {:<28} {}\n", "cpus", self.cpus);
        s += &format!(
            "  {:<28} {:.3}\n  {:<28} {:.3}\n",
            "boot_ms", self.boot_ms, "run_ms", self.run_ms
        );
        for (k, v) in &self.run.exits {
            s += &format!("  exits.{k:<22} {v}\n");
        }
        for (k, v) in &self.counters {
            s += &format!("  {k:<28} {v}\n");
        }
        for (k, v) in &self.run.hostcalls {
            s += &format!("  hostcalls.{k:<18} {v}\n");
        }
        for (k, v) in &self.run.firmware {
            s += &format!("  {k:<28} {v}\n");
        }
        s += &format!(
            "  {:<28} {}\n",
            "syscalls.total",
            self.run.syscalls.values().sum::<u64>()
        );
        for (k, v) in &self.run.syscalls {
            s += &format!("  {:<28} {v}\n", format!("syscalls.{k}"));
        }
        if self.run.syscalls_unsupported.is_empty() {
            s += &format!("  {:<28} none\n", "syscalls.unsupported");
        }
        for (k, v) in &self.run.syscalls_unsupported {
            s += &format!("  {:<28} {v}\n", format!("syscalls.unsupported.{k}"));
        }
        s
    }
}

/// The x86-64 name of syscall `nr` (the `syscalls` crate's table, generated from
/// Linux `arch/x86/entry/syscalls/syscall_64.tbl`); `syscall_NR` for a number Linux
/// does not define.
pub fn syscall_name(nr: u32) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map_or_else(|| format!("syscall_{nr}"), |s| s.name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscalls_are_named_as_linux_names_them() {
        assert_eq!(syscall_name(0), "read");
        assert_eq!(syscall_name(41), "socket");
        assert_eq!(syscall_name(435), "clone3");
        assert_eq!(syscall_name(100_000), "syscall_100000");
    }

    /// The highest x86-64 syscall number Linux defines: file_setattr (Linux 6.17).
    const HIGHEST_SYSCALL: u32 = 469;

    /// Numbers `arch/x86/entry/syscalls/syscall_64.tbl` leaves out: after uprobe
    /// (336) the table jumps to 424, where every architecture's new calls share
    /// numbers ("don't use numbers 387 through 423").
    const UNASSIGNED: std::ops::RangeInclusive<u32> = 337..=423;

    #[test]
    fn every_linux_syscall_number_has_its_name() {
        for nr in 0..=HIGHEST_SYSCALL {
            let name = syscall_name(nr);
            if UNASSIGNED.contains(&nr) {
                assert_eq!(name, format!("syscall_{nr}"));
            } else {
                assert!(!name.starts_with("syscall_"), "{nr} has no name");
            }
        }
        // Spot checks against syscall_64.tbl, the two `--stats` once printed as
        // syscall_221 and syscall_280 among them.
        for (nr, name) in [
            (17, "pread64"),
            (60, "exit"),
            (202, "futex"),
            (221, "fadvise64"),
            (231, "exit_group"),
            (280, "utimensat"),
            (302, "prlimit64"),
            (318, "getrandom"),
            (334, "rseq"),
            (335, "uretprobe"),
            (336, "uprobe"),
            (424, "pidfd_send_signal"),
            (439, "faccessat2"),
            (450, "set_mempolicy_home_node"),
            (462, "mseal"),
            (HIGHEST_SYSCALL, "file_setattr"),
        ] {
            assert_eq!(syscall_name(nr), name, "{nr}");
        }
    }

    #[test]
    fn json_has_every_counter_and_the_maps() {
        let mut stats = Stats {
            cpus: 4,
            counters: vec![("psc.calls", 3), ("tdp.faults", 7)],
            ..Stats::default()
        };
        stats.run.exit("io");
        stats.run.hostcall("write");
        stats.run.syscalls.insert("write".into(), 3);
        stats.run.syscalls.insert("exit_group".into(), 1);
        let v = stats.to_json();
        assert_eq!(v["syscalls"]["write"], 3);
        assert_eq!(v["syscalls.total"], 4);
        assert_eq!(v["psc.calls"], 3);
        assert_eq!(v["tdp.faults"], 7);
        assert_eq!(v["exits"]["io"], 1);
        assert_eq!(v["hostcalls"]["write"], 1);
        assert!(v["syscalls.unsupported"]
            .as_object()
            .is_some_and(|m| m.is_empty()));
        assert_eq!(v["cpus"], 4);
        assert_eq!(stats.get("tdp.faults"), Some(7));
        assert!(stats.render().contains("tdp.faults"));
        assert!(stats.render().contains("cpus"));
    }
}
