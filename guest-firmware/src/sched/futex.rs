//! Futex wait queues: which thread waits on which address, and who a wake, a requeue
//! or a wake-op releases (Linux `include/uapi/linux/futex.h` for the operations and
//! their encodings, `kernel/futex/` for the semantics). The queues know nothing of
//! scheduling: an operation reports the threads it releases, and the caller makes them
//! runnable. One address space, so every futex is keyed by its virtual address;
//! FUTEX_PRIVATE_FLAG changes nothing.

/// A thread, as the scheduler numbers it.
pub type ThreadId = u32;

/// FUTEX_BITSET_MATCH_ANY: the bitset of FUTEX_WAIT and FUTEX_WAKE.
pub const BITSET_MATCH_ANY: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    thread: ThreadId,
    addr: u64,
    bitset: u32,
}

const NO_WAITER: Waiter = Waiter {
    thread: 0,
    addr: 0,
    bitset: 0,
};

/// Why a wait could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// Every slot is taken (more waiters than threads can exist).
    Full,
    /// The thread already waits.
    AlreadyWaiting,
}

/// The wait queues of every futex: at most `N` waiters (one per thread), kept in one
/// array in arrival order, so that every operation costs time in proportion to the
/// waiters there are, not to `N` (ring 0 runs in an instruction emulator on some
/// hosts, docs/design.md).
#[derive(Debug)]
pub struct Futexes<const N: usize> {
    waiters: [Waiter; N],
    len: usize,
}

impl<const N: usize> Default for Futexes<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Futexes<N> {
    /// No waiters.
    pub const fn new() -> Self {
        Self {
            waiters: [NO_WAITER; N],
            len: 0,
        }
    }

    fn queued(&self) -> &[Waiter] {
        &self.waiters[..self.len]
    }

    /// Remove the waiter at `i`, keeping the others in order.
    fn remove(&mut self, i: usize) -> Waiter {
        let w = self.waiters[i];
        self.waiters.copy_within(i + 1..self.len, i);
        self.len -= 1;
        w
    }

    /// Queue `thread` on `addr` with `bitset` (non-zero; FUTEX_WAIT uses
    /// [`BITSET_MATCH_ANY`]).
    pub fn wait(&mut self, thread: ThreadId, addr: u64, bitset: u32) -> Result<(), QueueError> {
        if self.waits(thread) {
            return Err(QueueError::AlreadyWaiting);
        }
        if self.len == N {
            return Err(QueueError::Full);
        }
        self.waiters[self.len] = Waiter {
            thread,
            addr,
            bitset,
        };
        self.len += 1;
        Ok(())
    }

    /// Whether `thread` is queued.
    pub fn waits(&self, thread: ThreadId) -> bool {
        self.queued().iter().any(|w| w.thread == thread)
    }

    /// The address `thread` waits on, if it waits.
    pub fn address_of(&self, thread: ThreadId) -> Option<u64> {
        self.queued()
            .iter()
            .find(|w| w.thread == thread)
            .map(|w| w.addr)
    }

    /// Take `thread` out of its queue (its wait timed out or a signal interrupted
    /// it). `false` if it was not queued: a wake took it first.
    pub fn cancel(&mut self, thread: ThreadId) -> bool {
        match self.queued().iter().position(|w| w.thread == thread) {
            Some(i) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    /// The index of the oldest waiter on `addr` whose bitset meets `bitset`.
    fn oldest(&self, addr: u64, bitset: u32) -> Option<usize> {
        self.queued()
            .iter()
            .position(|w| w.addr == addr && w.bitset & bitset != 0)
    }

    /// Release up to `max` waiters on `addr` whose bitset meets `bitset`, oldest first,
    /// passing each to `released`. Returns how many.
    pub fn wake(
        &mut self,
        addr: u64,
        bitset: u32,
        max: u32,
        released: &mut impl FnMut(ThreadId),
    ) -> u32 {
        let mut n = 0;
        while n < max {
            let Some(i) = self.oldest(addr, bitset) else {
                break;
            };
            released(self.remove(i).thread);
            n += 1;
        }
        n
    }

    /// FUTEX_REQUEUE / FUTEX_CMP_REQUEUE after the caller's value check: release up to
    /// `wake_max` waiters on `from`, then move up to `requeue_max` of the rest, oldest
    /// first, to the end of `to`'s queue (as Linux appends them). Returns (released,
    /// moved).
    pub fn requeue(
        &mut self,
        from: u64,
        to: u64,
        wake_max: u32,
        requeue_max: u32,
        released: &mut impl FnMut(ThreadId),
    ) -> (u32, u32) {
        let woken = self.wake(from, BITSET_MATCH_ANY, wake_max, released);
        if from == to {
            return (woken, 0);
        }
        let mut moved = 0;
        while moved < requeue_max {
            let Some(i) = self.oldest(from, BITSET_MATCH_ANY) else {
                break;
            };
            let mut w = self.remove(i);
            w.addr = to;
            self.waiters[self.len] = w;
            self.len += 1;
            moved += 1;
        }
        (woken, moved)
    }
}

/// FUTEX_WAKE_OP's operation on the second futex word and its comparison of the old
/// value, decoded from the 32-bit `op` argument: `op[31:28]` the operation (bit 31
/// FUTEX_OP_OPARG_SHIFT), `op[27:24]` the comparison, `op[23:12]` the operand,
/// `op[11:0]` the comparison argument, both 12-bit signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeOp {
    op: u32,
    oparg: u32,
    cmp: u32,
    cmparg: i32,
}

/// FUTEX_OP_SET, _ADD, _OR, _ANDN, _XOR and FUTEX_OP_OPARG_SHIFT.
const OP_SET: u32 = 0;
const OP_ADD: u32 = 1;
const OP_OR: u32 = 2;
const OP_ANDN: u32 = 3;
const OP_XOR: u32 = 4;
const OP_OPARG_SHIFT: u32 = 8;
/// FUTEX_OP_CMP_EQ, _NE, _LT, _LE, _GT, _GE.
const CMP_EQ: u32 = 0;
const CMP_NE: u32 = 1;
const CMP_LT: u32 = 2;
const CMP_LE: u32 = 3;
const CMP_GT: u32 = 4;
const CMP_GE: u32 = 5;

/// Sign-extend a 12-bit field.
fn signed12(v: u32) -> i32 {
    ((v << 20) as i32) >> 20
}

impl WakeOp {
    /// Decode `op`; `None` for an operation or comparison Linux does not know (EINVAL
    /// or ENOSYS there).
    pub fn decode(op: u32) -> Option<Self> {
        let mut kind = (op >> 28) & 0xF;
        let cmp = (op >> 24) & 0xF;
        let mut oparg = signed12((op >> 12) & 0xFFF) as u32;
        if kind & OP_OPARG_SHIFT != 0 {
            kind &= !OP_OPARG_SHIFT;
            // Linux warns and masks a shift of 32 or more.
            oparg = 1u32 << (oparg & 31);
        }
        if kind > OP_XOR || cmp > CMP_GE {
            return None;
        }
        Some(Self {
            op: kind,
            oparg,
            cmp,
            cmparg: signed12(op & 0xFFF),
        })
    }

    /// The new value of the word that held `old`.
    pub fn apply(&self, old: u32) -> u32 {
        match self.op {
            OP_SET => self.oparg,
            OP_ADD => old.wrapping_add(self.oparg),
            OP_OR => old | self.oparg,
            OP_ANDN => old & !self.oparg,
            _ => old ^ self.oparg,
        }
    }

    /// Whether the waiters of the second word are woken too, given its old value
    /// (compared as a signed int, as Linux does).
    pub fn compare(&self, old: u32) -> bool {
        let (old, arg) = (old as i32, self.cmparg);
        match self.cmp {
            CMP_EQ => old == arg,
            CMP_NE => old != arg,
            CMP_LT => old < arg,
            CMP_LE => old <= arg,
            CMP_GT => old > arg,
            _ => old >= arg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn woken<const N: usize>(f: &mut Futexes<N>, addr: u64, bitset: u32, max: u32) -> Vec<u32> {
        let mut out = Vec::new();
        f.wake(addr, bitset, max, &mut |t| out.push(t));
        out
    }

    #[test]
    fn waiters_are_released_oldest_first_and_only_from_their_address() {
        let mut f = Futexes::<8>::new();
        for (t, a) in [(1, 0x1000), (2, 0x2000), (3, 0x1000), (4, 0x1000)] {
            f.wait(t, a, BITSET_MATCH_ANY).unwrap();
        }
        assert_eq!(woken(&mut f, 0x1000, BITSET_MATCH_ANY, 2), [1, 3]);
        assert_eq!(
            woken(&mut f, 0x3000, BITSET_MATCH_ANY, 9),
            Vec::<u32>::new()
        );
        assert_eq!(woken(&mut f, 0x1000, BITSET_MATCH_ANY, 9), [4]);
        assert!(f.waits(2) && !f.waits(1));
        assert_eq!(f.address_of(2), Some(0x2000));
    }

    #[test]
    fn bitsets_select_waiters() {
        let mut f = Futexes::<4>::new();
        f.wait(1, 0x10, 0b01).unwrap();
        f.wait(2, 0x10, 0b10).unwrap();
        assert_eq!(woken(&mut f, 0x10, 0b10, 9), [2]);
        assert_eq!(woken(&mut f, 0x10, BITSET_MATCH_ANY, 9), [1]);
    }

    #[test]
    fn a_cancelled_wait_is_not_woken_and_a_thread_waits_once() {
        let mut f = Futexes::<2>::new();
        f.wait(1, 0x10, BITSET_MATCH_ANY).unwrap();
        assert_eq!(f.wait(1, 0x20, 1), Err(QueueError::AlreadyWaiting));
        f.wait(2, 0x10, BITSET_MATCH_ANY).unwrap();
        assert_eq!(f.wait(3, 0x10, 1), Err(QueueError::Full));
        assert!(f.cancel(1));
        assert!(!f.cancel(1), "already out");
        assert_eq!(woken(&mut f, 0x10, BITSET_MATCH_ANY, 9), [2]);
    }

    #[test]
    fn requeue_wakes_some_and_moves_the_rest_in_order() {
        let mut f = Futexes::<8>::new();
        for t in 1..=5 {
            f.wait(t, 0xA, BITSET_MATCH_ANY).unwrap();
        }
        f.wait(9, 0xB, BITSET_MATCH_ANY).unwrap();
        let mut out = Vec::new();
        assert_eq!(f.requeue(0xA, 0xB, 1, 2, &mut |t| out.push(t)), (1, 2));
        assert_eq!(out, [1]);
        // 2 and 3 moved behind 9, in their order; 4 and 5 stayed.
        assert_eq!(woken(&mut f, 0xB, BITSET_MATCH_ANY, 9), [9, 2, 3]);
        assert_eq!(woken(&mut f, 0xA, BITSET_MATCH_ANY, 9), [4, 5]);
    }

    #[test]
    fn wake_op_decodes_and_applies_as_linux_encodes_it() {
        // FUTEX_OP(FUTEX_OP_SET, 0, FUTEX_OP_CMP_GT, 1): glibc's pthread_cond wake.
        let op = WakeOp::decode((OP_SET << 28) | (CMP_GT << 24) | 1).unwrap();
        assert_eq!(op.apply(7), 0);
        assert!(op.compare(2) && !op.compare(1));
        // ADD with a negative 12-bit operand, compared signed.
        let op = WakeOp::decode((OP_ADD << 28) | (CMP_LT << 24) | (0xFFF << 12)).unwrap();
        assert_eq!(op.apply(5), 4);
        assert!(op.compare(u32::MAX), "-1 < 0");
        // OPARG_SHIFT: 1 << oparg.
        let op =
            WakeOp::decode(((OP_OR | OP_OPARG_SHIFT) << 28) | (CMP_NE << 24) | (4 << 12)).unwrap();
        assert_eq!(op.apply(1), 0b1_0001);
        let op = WakeOp::decode((OP_ANDN << 28) | (CMP_EQ << 24) | (0b110 << 12)).unwrap();
        assert_eq!(op.apply(0b111), 1);
        let op = WakeOp::decode((OP_XOR << 28) | (CMP_GE << 24) | (1 << 12)).unwrap();
        assert_eq!(op.apply(3), 2);
        assert_eq!(WakeOp::decode(5 << 28), None);
        assert_eq!(WakeOp::decode(6 << 24), None);
    }
}
