//! Threads of the app: the thread table and run queue ([`threads`]) and the futex
//! wait queues ([`futex`]).
pub mod futex;
pub mod threads;
