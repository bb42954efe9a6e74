//! Timers: firing in deadline order and never early, sleep, tickers, stop and reset, and an
//! idle runtime waking at the deadline.

use safepoint_sched::{Chan, Runtime, Select, Ticker, Timer, after, go, sleep, sleep_until};
use std::time::{Duration, Instant};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

/// Timers armed in shuffled order fire in deadline order, each at or after its deadline: the
/// time each one sends (taken when it fires) is never before its deadline, and never before the
/// fire time of an earlier deadline. (Lateness >= 0 is a correctness property, not a speed one.)
///
/// Order is only promised among timers that were all pending at the earlier deadline: a timer
/// armed after its deadline has passed fires at once, when it is armed. So each pair is judged
/// only if both were armed before the earlier of the two deadlines (on a loaded machine the
/// arming loop can take longer than the first deadlines), and the test checks that it judged
/// some. And it is promised among the timers of one heap, a P's (the module's docs): with two
/// Ps, the arming goroutine may be preempted and stolen halfway and arm the rest on the other
/// P, whose timers fire on their own (CI saw "a later deadline fired before an earlier one"
/// that way). So one P; `sleep_never_early` and the rest run on two.
#[test]
fn timers_fire_in_order_and_never_early() {
    let rt = rt(1);
    rt.block_on(|| {
        let t0 = Instant::now() + Duration::from_millis(2);
        // 64 deadlines 2.1..8.4 ms out, armed in a scrambled order.
        let mut order: Vec<u64> = (1..=64).collect();
        for i in 0..order.len() {
            let j = (i * 37 + 11) % order.len();
            order.swap(i, j);
        }
        let timers: Vec<(Instant, Instant, Timer)> = order
            .iter()
            .map(|&k| {
                let at = t0 + Duration::from_micros(100 * k);
                let t = Timer::at(at);
                (at, Instant::now(), t)
            })
            .collect();
        let mut fired: Vec<(Instant, Instant, Instant)> =
            timers.iter().map(|(at, armed, t)| (*at, *armed, t.chan().recv().unwrap())).collect();
        fired.sort();
        let mut judged = 0;
        for w in fired.windows(2) {
            let ((at_a, armed_a, fire_a), (_, armed_b, fire_b)) = (w[0], w[1]);
            if armed_a <= at_a && armed_b <= at_a {
                judged += 1;
                assert!(fire_b >= fire_a, "a later deadline fired before an earlier one");
            }
        }
        assert!(judged > 0, "every timer was armed after its deadline: nothing to judge");
        for (at, _, when) in fired {
            assert!(when >= at, "a timer fired {:?} early", at - when);
        }
    });
}

/// sleep never returns early, on goroutines (many at once) and outside the runtime.
#[test]
fn sleep_never_early() {
    let rt = rt(2);
    rt.block_on(|| {
        let hs: Vec<_> = (0..200u64)
            .map(|i| {
                go(move || {
                    let d = Duration::from_micros(50 + (i * 7919) % 2000);
                    let t = Instant::now();
                    sleep(d);
                    t.elapsed() >= d
                })
            })
            .collect();
        for h in hs {
            assert!(h.join().unwrap(), "a sleep returned early");
        }
        let at = Instant::now() + Duration::from_micros(500);
        sleep_until(at);
        assert!(Instant::now() >= at);
        sleep(Duration::ZERO);
    });
    let t = Instant::now();
    sleep(Duration::from_millis(1));
    assert!(t.elapsed() >= Duration::from_millis(1));
}

/// A ticker ticks repeatedly, each tick at or after its due time; stop ends the ticks.
#[test]
fn ticker_ticks_and_stops() {
    let rt = rt(2);
    rt.block_on(|| {
        let period = Duration::from_micros(300);
        let t0 = Instant::now();
        let tk = Ticker::new(period);
        let mut last = t0;
        for i in 1..=10u32 {
            let t = tk.chan().recv().unwrap();
            assert!(t >= t0 + period * i || t > last, "tick {i} early");
            assert!(t >= last);
            last = t;
        }
        tk.stop();
        // After stop, no tick arrives (a timeout wins).
        let r = Select::new()
            .recv(tk.chan(), |_| "tick")
            .timeout(Duration::from_millis(5), || "quiet")
            .wait();
        assert_eq!(r, "quiet");
    });
}

/// Stop before the deadline: returns true and nothing is ever sent; stop after it fired but
/// before the value was received: the value is discarded (Go 1.23). Reset re-arms.
#[test]
fn timer_stop_and_reset() {
    let rt = rt(2);
    rt.block_on(|| {
        let t = Timer::new(Duration::from_secs(3600));
        assert!(t.stop());
        assert!(!t.stop());
        let t = Timer::new(Duration::from_micros(100));
        // Wait until it has fired (its value buffered), without receiving it.
        sleep(Duration::from_millis(2));
        while t.chan().is_empty() {
            sleep(Duration::from_micros(100));
        }
        assert!(t.stop(), "an unreceived expiry counts as pending");
        assert!(t.chan().try_recv().is_err(), "a stale value survived stop");
        let start = Instant::now();
        assert!(!t.reset(Duration::from_micros(300)));
        let fired = t.chan().recv().unwrap();
        assert!(fired >= start + Duration::from_micros(300));
        // after() fires once.
        // (The clock is read before arming: a read after it could land arbitrarily later on a
        // loaded machine, and the deadline is relative to the arming.)
        let s = Instant::now();
        let c: Chan<Instant> = after(Duration::from_micros(200));
        assert!(c.recv().unwrap() >= s + Duration::from_micros(200));
        // Thousands of stopped timers (select timeouts that did not fire) do not pile up in
        // ways that break later timers.
        let quick = Chan::<u32>::new(1);
        for i in 0..5_000 {
            quick.send(i);
            let v = Select::new()
                .recv(&quick, |v| v.unwrap())
                .timeout(Duration::from_secs(30), || u32::MAX)
                .wait();
            assert_eq!(v, i);
        }
        let s = Instant::now();
        sleep(Duration::from_micros(200));
        assert!(s.elapsed() >= Duration::from_micros(200));
    });
}

/// An otherwise idle runtime wakes for its timers: a single goroutine sleeping repeatedly with
/// every other P idle (so the wake-up must come from the timed sleeper, not from a busy P).
#[test]
fn idle_runtime_wakes_at_deadline() {
    let rt = rt(2);
    let lates = rt.block_on(|| {
        (0..20)
            .map(|_| {
                let t = Instant::now();
                sleep(Duration::from_micros(500));
                t.elapsed().checked_sub(Duration::from_micros(500)).is_some()
            })
            .collect::<Vec<_>>()
    });
    assert!(lates.iter().all(|&ok| ok), "a sleep returned early");
}
