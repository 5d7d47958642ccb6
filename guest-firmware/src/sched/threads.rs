//! Which app thread runs, which wait and until when: the thread table, the run queue
//! and the wake-ups, without the machine (stacks and the switch itself are
//! `sched/switch.rs`'s). Every operation the scheduler does on a switch costs time in
//! proportion to what it touches, not to the table's size: ring 0 runs in an
//! instruction emulator on some hosts (docs/design.md).

use super::futex::ThreadId;

/// Where a thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The slot holds no thread.
    Free,
    /// In the run queue.
    Runnable,
    /// On the CPU.
    Running,
    /// Waiting for a wake-up or its deadline.
    Blocked,
    /// Finished; its slot (and kernel stack) are freed once another thread runs.
    Exited,
}

/// Why a blocked thread runs again, which decides what its system call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Nothing yet (still blocked, or never blocked).
    None,
    /// Another thread woke it (futex wake, a child's exit, ...).
    Woken,
    /// Its deadline passed.
    TimedOut,
    /// A signal arrived for it.
    Interrupted,
}

/// One thread's scheduling state.
#[derive(Debug, Clone, Copy)]
pub struct Thread {
    /// Its Linux thread id.
    pub tid: ThreadId,
    /// Where it is.
    pub state: State,
    /// Why it last woke.
    pub wake: Wake,
    /// CLOCK_MONOTONIC deadline of a blocked thread's wait; `u64::MAX` for none.
    pub deadline: u64,
}

const FREE: Thread = Thread {
    tid: 0,
    state: State::Free,
    wake: Wake::None,
    deadline: u64::MAX,
};

/// Why a thread could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// The threads of the app, at most `N`, in slots; slot numbers are what the rest of the
/// firmware keeps (a thread's kernel stack and saved state are per slot).
#[derive(Debug)]
pub struct Threads<const N: usize> {
    slots: [Thread; N],
    /// Run queue: slot numbers, a ring of `queued` entries from `head`.
    queue: [u16; N],
    head: usize,
    queued: usize,
    /// The slot on the CPU.
    current: usize,
    /// Threads that are neither free nor exited.
    live: usize,
    /// Blocked threads with a deadline (so that expiring costs nothing without them).
    timed: usize,
    /// No deadline of a blocked thread is earlier than this (it may be earlier than
    /// the earliest one left after a wake-up; the next scan corrects it).
    earliest: u64,
    /// Where the search for a free slot starts: no slot below it is free, so the
    /// lowest free slot is taken, and a slot whose kernel stack is mapped already is
    /// used again rather than a new one.
    free_hint: usize,
    next_tid: ThreadId,
}

impl<const N: usize> Threads<N> {
    /// A table whose one thread, slot 0 with id `tid`, is running.
    pub const fn new(tid: ThreadId) -> Self {
        const { assert!(N > 0 && N <= u16::MAX as usize) };
        let mut slots = [FREE; N];
        slots[0] = Thread {
            tid,
            state: State::Running,
            wake: Wake::None,
            deadline: u64::MAX,
        };
        Self {
            slots,
            queue: [0; N],
            head: 0,
            queued: 0,
            current: 0,
            live: 1,
            timed: 0,
            earliest: u64::MAX,
            free_hint: 0,
            next_tid: tid + 1,
        }
    }

    /// The slot on the CPU that holds the kernel (`N` while that CPU idles).
    pub fn current(&self) -> usize {
        self.current
    }

    /// Whether the CPU that holds the kernel runs a thread (it does not while it
    /// idles).
    pub fn has_current(&self) -> bool {
        self.current < N
    }

    /// The CPU that holds the kernel changed: it runs the thread in `slot`, or none.
    pub fn set_current(&mut self, slot: Option<usize>) {
        self.current = slot.filter(|&s| s < N).unwrap_or(N);
    }

    /// An idle CPU takes the front of the run queue, which becomes current.
    pub fn pick(&mut self) -> Option<usize> {
        if self.queued == 0 {
            return None;
        }
        let next = usize::from(self.queue[self.head]);
        self.head = (self.head + 1) % N;
        self.queued -= 1;
        self.slots[next].state = State::Running;
        self.current = next;
        Some(next)
    }

    /// The thread in `slot`.
    pub fn get(&self, slot: usize) -> &Thread {
        &self.slots[slot]
    }

    /// Whether `slot` holds a thread that has not exited.
    pub fn is_live(&self, slot: usize) -> bool {
        !matches!(self.slots[slot].state, State::Free | State::Exited)
    }

    /// Threads that have not exited.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The slot of the live thread `tid`.
    pub fn find(&self, tid: ThreadId) -> Option<usize> {
        self.slots
            .iter()
            .position(|t| t.tid == tid && !matches!(t.state, State::Free | State::Exited))
    }

    fn enqueue(&mut self, slot: usize) {
        // At most N threads are runnable at once, so the ring never overflows.
        let at = (self.head + self.queued) % N;
        self.queue[at] = slot as u16;
        self.queued += 1;
        self.slots[slot].state = State::Runnable;
    }

    /// A new thread (clone), not runnable until [`Self::start`]; returns its slot and
    /// id.
    pub fn spawn(&mut self) -> Result<(usize, ThreadId), TableFull> {
        let slot = (self.free_hint..N)
            .find(|&s| self.slots[s].state == State::Free)
            .ok_or(TableFull)?;
        self.free_hint = slot + 1;
        let tid = self.next_tid;
        self.next_tid = self.next_tid.wrapping_add(1).max(2);
        self.slots[slot] = Thread {
            tid,
            state: State::Blocked,
            ..FREE
        };
        self.live += 1;
        Ok((slot, tid))
    }

    /// Make the new thread in `slot` runnable.
    pub fn start(&mut self, slot: usize) {
        self.wake(slot, Wake::None);
    }

    /// Forget the new thread in `slot`, which never ran.
    pub fn discard(&mut self, slot: usize) {
        if self.slots[slot].state == State::Blocked && slot != self.current {
            self.slots[slot] = FREE;
            self.live -= 1;
            self.free_hint = self.free_hint.min(slot);
        }
    }

    /// The current thread waits until woken or until `deadline` (`u64::MAX`: no
    /// deadline). It stays current until [`Self::switch`] picks another.
    pub fn block_current(&mut self, deadline: u64) {
        let t = &mut self.slots[self.current];
        t.state = State::Blocked;
        t.wake = Wake::None;
        t.deadline = deadline;
        if deadline != u64::MAX {
            self.timed += 1;
            self.earliest = self.earliest.min(deadline);
        }
    }

    /// Make the blocked thread in `slot` runnable for `why`. `false` if it was not
    /// blocked (a second wake-up of the same wait loses).
    pub fn wake(&mut self, slot: usize, why: Wake) -> bool {
        let t = &mut self.slots[slot];
        if t.state != State::Blocked {
            return false;
        }
        if t.deadline != u64::MAX {
            self.timed -= 1;
            if self.timed == 0 {
                self.earliest = u64::MAX;
            }
        }
        t.deadline = u64::MAX;
        t.wake = why;
        if slot == self.current {
            // Woken before it was switched out: it just runs on.
            t.state = State::Running;
        } else {
            self.enqueue(slot);
        }
        true
    }

    /// Wake every blocked thread whose deadline is at or before `now`, passing each
    /// slot to `expired` (which takes it out of whatever queue it waited in). Scans
    /// the table only when a deadline may have passed.
    pub fn expire(&mut self, now: u64, expired: &mut impl FnMut(usize)) {
        if self.timed == 0 || now < self.earliest {
            return;
        }
        let mut earliest = u64::MAX;
        for slot in 0..N {
            let t = self.slots[slot];
            if t.state != State::Blocked || t.deadline == u64::MAX {
                continue;
            }
            if t.deadline <= now {
                expired(slot);
                self.wake(slot, Wake::TimedOut);
            } else {
                earliest = earliest.min(t.deadline);
            }
        }
        self.earliest = earliest;
    }

    /// No blocked thread's deadline is earlier than this; `None` without deadlines.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.timed != 0).then_some(self.earliest)
    }

    /// Threads in the run queue.
    pub fn runnable(&self) -> usize {
        self.queued
    }

    /// The current thread has finished.
    pub fn exit_current(&mut self) {
        let t = &mut self.slots[self.current];
        if t.state == State::Blocked && t.deadline != u64::MAX {
            self.timed -= 1;
        }
        t.deadline = u64::MAX;
        t.state = State::Exited;
        self.live -= 1;
    }

    /// Free the slot of an exited thread (once it no longer runs on its stack).
    pub fn reap(&mut self, slot: usize) {
        if self.slots[slot].state == State::Exited {
            self.slots[slot] = FREE;
            self.free_hint = self.free_hint.min(slot);
        }
    }

    /// Choose what runs next: the current thread goes to the back of the run queue if
    /// it can still run (`yield_cpu`, or a time slice ended), and the front of the
    /// queue runs. Returns `(previous, next)` slots; `None` if nothing can run (every
    /// live thread is blocked: the CPU idles until a deadline).
    pub fn switch(&mut self) -> Option<(usize, usize)> {
        let prev = self.current;
        if self.slots[prev].state == State::Running {
            if self.queued == 0 {
                return Some((prev, prev));
            }
            self.enqueue(prev);
        }
        let next = self.pick()?;
        Some((prev, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new thread, made runnable at once.
    fn started<const N: usize>(t: &mut Threads<N>) -> (usize, ThreadId) {
        let (slot, tid) = t.spawn().unwrap();
        assert_eq!(
            t.get(slot).state,
            State::Blocked,
            "new threads wait for start"
        );
        t.start(slot);
        (slot, tid)
    }

    #[test]
    fn round_robin_over_runnable_threads() {
        let mut t = Threads::<4>::new(100);
        let (a, ta) = started(&mut t);
        let (b, tb) = started(&mut t);
        assert_eq!((ta, tb), (101, 102));
        assert_eq!(t.switch(), Some((0, a)));
        assert_eq!(t.switch(), Some((a, b)));
        assert_eq!(t.switch(), Some((b, 0)));
        assert_eq!(t.get(0).state, State::Running);
        assert_eq!(t.get(a).state, State::Runnable);
        assert_eq!(t.find(102), Some(b));
    }

    #[test]
    fn an_idle_cpu_takes_the_front_of_the_queue_and_wakes_do_not_mistake_it() {
        let mut t = Threads::<4>::new(1);
        let (a, _) = started(&mut t);
        // The first thread blocks on its CPU, which goes idle.
        t.block_current(u64::MAX);
        assert_eq!(t.switch(), Some((0, a)));
        t.set_current(None);
        assert!(!t.has_current());
        // A wake while no thread is current queues the thread rather than marking it
        // running where nothing runs it.
        assert!(t.wake(0, Wake::Woken));
        assert_eq!(t.get(0).state, State::Runnable);
        assert_eq!(t.pick(), Some(0));
        assert_eq!(t.current(), 0);
        assert_eq!(t.pick(), None);
    }

    #[test]
    fn the_lowest_free_slot_is_used_again() {
        let mut t = Threads::<8>::new(1);
        let (a, _) = started(&mut t);
        let (b, _) = started(&mut t);
        assert_eq!((a, b), (1, 2));
        // a runs and exits; once reaped its slot is the next one used.
        assert_eq!(t.switch(), Some((0, a)));
        t.exit_current();
        assert_eq!(t.switch(), Some((a, b)));
        t.reap(a);
        let (c, _) = t.spawn().unwrap();
        assert_eq!(c, a);
        let (d, _) = t.spawn().unwrap();
        assert_eq!(d, 3);
    }

    #[test]
    fn a_discarded_new_thread_leaves_no_trace() {
        let mut t = Threads::<4>::new(1);
        let (a, _) = t.spawn().unwrap();
        assert_eq!(t.live(), 2);
        t.discard(a);
        assert_eq!(t.live(), 1);
        assert_eq!(t.get(a).state, State::Free);
        assert_eq!(t.switch(), Some((0, 0)), "it never ran");
    }

    #[test]
    fn a_lone_running_thread_keeps_the_cpu() {
        let mut t = Threads::<2>::new(1);
        assert_eq!(t.switch(), Some((0, 0)));
    }

    #[test]
    fn blocked_threads_wait_for_a_wake_or_their_deadline() {
        let mut t = Threads::<4>::new(1);
        let (a, _) = started(&mut t);
        t.block_current(500);
        assert_eq!(t.next_deadline(), Some(500));
        assert_eq!(t.switch(), Some((0, a)));
        // a blocks without a deadline: nothing can run.
        t.block_current(u64::MAX);
        assert_eq!(t.switch(), None);
        let mut expired = Vec::new();
        t.expire(499, &mut |s| expired.push(s));
        assert!(expired.is_empty());
        t.expire(500, &mut |s| expired.push(s));
        assert_eq!(expired, [0]);
        assert_eq!(t.get(0).wake, Wake::TimedOut);
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.switch(), Some((a, 0)));
        assert!(t.wake(a, Wake::Woken));
        assert!(!t.wake(a, Wake::Woken), "a second wake-up loses");
        assert_eq!(t.switch(), Some((0, a)));
        assert_eq!(t.get(a).wake, Wake::Woken);
    }

    #[test]
    fn a_thread_woken_before_it_switched_out_runs_on() {
        let mut t = Threads::<2>::new(1);
        t.block_current(u64::MAX);
        assert!(t.wake(0, Wake::Interrupted));
        assert_eq!(t.get(0).state, State::Running);
        assert_eq!(t.switch(), Some((0, 0)));
    }

    #[test]
    fn exited_threads_leave_and_their_slots_return() {
        let mut t = Threads::<2>::new(1);
        let (a, _) = started(&mut t);
        assert_eq!(t.spawn(), Err(TableFull));
        assert_eq!(t.live(), 2);
        t.exit_current();
        assert_eq!(t.live(), 1);
        assert_eq!(t.switch(), Some((0, a)));
        assert_eq!(t.find(1), None);
        t.reap(0);
        let (slot, tid) = started(&mut t);
        assert_eq!((slot, tid), (0, 3));
    }
}
