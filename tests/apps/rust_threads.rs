//! Rust std threads as a static program uses them: spawn and join, Mutex, Condvar,
//! Barrier, RwLock, mpsc channels, thread-locals with destructors, scoped threads,
//! parking, and more threads than CPUs. Run natively and under nacre, it must print
//! the same: "ok NAME" or "FAIL NAME: DETAIL" per check; exit 0 when all passed.
//!
//! Build: rustc -O -C target-feature=+crt-static --edition 2021 rust_threads.rs

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

fn spawn_join() -> Result<(), String> {
    let handles: Vec<_> = (0..8u64)
        .map(|i| thread::spawn(move || (0..10_000u64).map(|x| x ^ i).sum::<u64>()))
        .collect();
    let sums: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let expected: Vec<u64> = (0..8u64)
        .map(|i| (0..10_000u64).map(|x| x ^ i).sum())
        .collect();
    if sums == expected {
        Ok(())
    } else {
        Err(format!("{sums:?}"))
    }
}

fn mutex() -> Result<(), String> {
    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let c = Arc::clone(&counter);
            thread::spawn(move || {
                for i in 0..5_000 {
                    *c.lock().unwrap() += 1;
                    if i % 500 == 0 {
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let n = *counter.lock().unwrap();
    if n == 30_000 {
        Ok(())
    } else {
        Err(format!("counted {n}"))
    }
}

fn condvar() -> Result<(), String> {
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let p = Arc::clone(&pair);
            thread::spawn(move || {
                let (lock, cv) = &*p;
                let mut v = lock.lock().unwrap();
                while *v == 0 {
                    v = cv.wait(v).unwrap();
                }
                *v
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(10));
    {
        let (lock, cv) = &*pair;
        *lock.lock().unwrap() = 7;
        cv.notify_all();
    }
    let got: Vec<u32> = waiters.into_iter().map(|h| h.join().unwrap()).collect();
    // A timed wait that nobody signals times out.
    let (lock, cv) = &*pair;
    let start = Instant::now();
    let (_guard, timeout) = cv
        .wait_timeout(lock.lock().unwrap(), Duration::from_millis(20))
        .unwrap();
    if got != [7; 4] {
        return Err(format!("waiters saw {got:?}"));
    }
    if !timeout.timed_out() || start.elapsed() < Duration::from_millis(20) {
        return Err(format!("wait_timeout after {:?}", start.elapsed()));
    }
    Ok(())
}

fn barrier_rwlock() -> Result<(), String> {
    let barrier = Arc::new(Barrier::new(5));
    let data = Arc::new(RwLock::new(Vec::new()));
    let handles: Vec<_> = (0..5)
        .map(|i| {
            let b = Arc::clone(&barrier);
            let d = Arc::clone(&data);
            thread::spawn(move || {
                d.write().unwrap().push(i);
                b.wait();
                d.read().unwrap().len()
            })
        })
        .collect();
    let seen: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    if seen == [5; 5] {
        Ok(())
    } else {
        Err(format!("after the barrier threads saw {seen:?}"))
    }
}

fn channels() -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    for id in 0..4u64 {
        let tx = tx.clone();
        thread::spawn(move || {
            for i in 0..250u64 {
                tx.send(id * 1000 + i).unwrap();
            }
        });
    }
    drop(tx);
    let total: u64 = rx.iter().sum();
    let (stx, srx) = mpsc::sync_channel::<u32>(0);
    let echo = thread::spawn(move || srx.iter().map(u64::from).sum::<u64>());
    for i in 0..100 {
        stx.send(i).unwrap();
    }
    drop(stx);
    let rendezvous = echo.join().unwrap();
    let expected: u64 = (0..4u64).map(|id| (0..250).map(|i| id * 1000 + i).sum::<u64>()).sum();
    if total == expected && rendezvous == 4950 {
        Ok(())
    } else {
        Err(format!("channel sum {total}, rendezvous sum {rendezvous}"))
    }
}

static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Guard(usize);

impl Drop for Guard {
    fn drop(&mut self) {
        DROPPED.fetch_add(self.0, Ordering::SeqCst);
    }
}

thread_local! {
    static GUARD: Cell<Option<Guard>> = const { Cell::new(None) };
    static COUNT: Cell<u32> = const { Cell::new(0) };
}

fn thread_locals() -> Result<(), String> {
    let handles: Vec<_> = (1..=4)
        .map(|i| {
            thread::spawn(move || {
                GUARD.with(|g| g.set(Some(Guard(i))));
                for _ in 0..i {
                    COUNT.with(|c| c.set(c.get() + 1));
                }
                COUNT.with(Cell::get)
            })
        })
        .collect();
    let counts: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let main_count = COUNT.with(Cell::get);
    let dropped = DROPPED.load(Ordering::SeqCst);
    if counts != [1, 2, 3, 4] || main_count != 0 || dropped != 10 {
        return Err(format!(
            "counts {counts:?}, main {main_count}, destructors summed {dropped}"
        ));
    }
    Ok(())
}

fn scoped_and_park() -> Result<(), String> {
    let mut data = vec![1u64; 1000];
    thread::scope(|s| {
        for chunk in data.chunks_mut(100) {
            s.spawn(move || chunk.iter_mut().for_each(|x| *x *= 3));
        }
    });
    let sum: u64 = data.iter().sum();
    let flag = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&flag);
    let parked = thread::spawn(move || {
        while f.load(Ordering::SeqCst) == 0 {
            thread::park();
        }
    });
    thread::sleep(Duration::from_millis(5));
    flag.store(1, Ordering::SeqCst);
    parked.thread().unpark();
    parked.join().unwrap();
    if sum == 3000 {
        Ok(())
    } else {
        Err(format!("scoped sum {sum}"))
    }
}

fn many_threads() -> Result<(), String> {
    let live = Arc::new(Barrier::new(121));
    let handles: Vec<_> = (0..120u64)
        .map(|i| {
            let b = Arc::clone(&live);
            thread::spawn(move || {
                b.wait();
                i
            })
        })
        .collect();
    live.wait();
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    if sum == 119 * 120 / 2 {
        Ok(())
    } else {
        Err(format!("sum {sum}"))
    }
}

fn main() {
    let checks: [(&str, fn() -> Result<(), String>); 8] = [
        ("spawn_join", spawn_join),
        ("mutex", mutex),
        ("condvar", condvar),
        ("barrier_rwlock", barrier_rwlock),
        ("channels", channels),
        ("thread_locals", thread_locals),
        ("scoped_and_park", scoped_and_park),
        ("many_threads", many_threads),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check() {
            Ok(()) => println!("ok {name}"),
            Err(e) => {
                println!("FAIL {name}: {e}");
                failed += 1;
            }
        }
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
