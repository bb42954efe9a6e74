//! Join handles: a goroutine's result (or its panic) for whoever waits for it.

use std::any::Any;
use std::sync::{Arc, Mutex};

use safepoint_arch::Note;

use crate::GoroutineRef;

/// Why a joined goroutine produced no value: it panicked.
pub struct JoinError {
    id: u64,
    payload: Box<dyn Any + Send + 'static>,
    traceback: Option<String>,
}

impl JoinError {
    /// The id of the goroutine that panicked.
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let h = rt.spawn(|| panic!("boom")).unwrap();
    /// let id = h.id();
    /// assert_eq!(h.join().unwrap_err().id(), id);
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The panic message, if it was a string.
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let e = rt.spawn(|| panic!("boom {}", 7)).unwrap().join().unwrap_err();
    /// assert_eq!(e.message(), Some("boom 7"));
    /// ```
    pub fn message(&self) -> Option<&str> {
        panic_message(&*self.payload)
    }
    /// The goroutine's managed-stack traceback at the panic (when the runtime was given a
    /// registry and the managed stack had frames).
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// // No registry was given to the runtime, so no managed-stack traceback.
    /// let e = rt.spawn(|| panic!("boom")).unwrap().join().unwrap_err();
    /// assert_eq!(e.traceback(), None);
    /// ```
    pub fn traceback(&self) -> Option<&str> {
        self.traceback.as_deref()
    }

    /// Whether the goroutine did not panic but was unwound because its runtime shut down
    /// (the payload is a [`crate::RuntimeShutdown`]).
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let e = rt.spawn(|| panic!("boom")).unwrap().join().unwrap_err();
    /// assert!(!e.is_shutdown()); // a panic of its own, not the runtime's shutdown
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.payload.is::<crate::RuntimeShutdown>()
    }

    /// The panic payload, to re-raise it with `std::panic::resume_unwind`.
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let e = rt.spawn(|| std::panic::panic_any(17u32)).unwrap().join().unwrap_err();
    /// assert_eq!(e.message(), None); // not a string
    /// assert_eq!(*e.into_panic().downcast::<u32>().unwrap(), 17);
    /// ```
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.payload
    }
}

impl core::fmt::Debug for JoinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "JoinError(goroutine {} panicked: {:?})",
            self.id,
            self.message().unwrap_or("<non-string payload>")
        )
    }
}

impl core::fmt::Display for JoinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if let Some(s) = self.payload.downcast_ref::<crate::RuntimeShutdown>() {
            return write!(f, "{s}");
        }
        write!(
            f,
            "goroutine {} panicked: {}",
            self.id,
            self.message().unwrap_or("<non-string payload>")
        )?;
        if let Some(tb) = &self.traceback {
            write!(f, "\n{}", tb.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for JoinError {}

pub(crate) fn panic_message(p: &(dyn Any + Send)) -> Option<&str> {
    p.downcast_ref::<&'static str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()))
}

enum Waiter {
    None,
    Goroutine(GoroutineRef),
    Thread(Arc<Note>),
}

struct State<T> {
    /// The error boxed: a goroutine's cell lives as long as it runs, and a panic is rare.
    result: Option<Result<T, Box<JoinError>>>,
    done: bool,
    detached: bool,
    waiter: Waiter,
}

pub(crate) struct Cell<T> {
    state: Mutex<State<T>>,
}

impl<T> Cell<T> {
    pub fn new() -> Arc<Cell<T>> {
        Arc::new(Cell {
            state: Mutex::new(State {
                result: None,
                done: false,
                detached: false,
                waiter: Waiter::None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the finished goroutine.
    pub fn complete(&self, id: u64, r: std::thread::Result<T>, traceback: Option<String>) {
        let mut s = self.lock();
        let r = r.map_err(|payload| Box::new(JoinError { id, payload, traceback }));
        if s.detached {
            // A goroutine unwound by shutdown is not a failure to report.
            if let Err(e) = &r
                && !e.is_shutdown()
            {
                crate::message(format_args!("{e}"));
            }
            s.done = true;
            return;
        }
        s.result = Some(r);
        s.done = true;
        let w = core::mem::replace(&mut s.waiter, Waiter::None);
        drop(s);
        match w {
            Waiter::None => {}
            Waiter::Goroutine(r) => r.ready(),
            Waiter::Thread(n) => n.wakeup(),
        }
    }
}

/// Owns the right to wait for a goroutine's result. Dropping it detaches the goroutine: it runs
/// on, and a panic of it is printed (with its id) instead of returned.
pub struct JoinHandle<T> {
    cell: Arc<Cell<T>>,
    id: u64,
    g: crate::Goroutine,
}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "JoinHandle(goroutine {})", self.id)
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(cell: Arc<Cell<T>>, id: u64, g: crate::Goroutine) -> JoinHandle<T> {
        JoinHandle { cell, id, g }
    }

    /// The goroutine's id.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, goroutine_id};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let h = rt.spawn(goroutine_id).unwrap();
    /// let id = h.id();
    /// assert_eq!(h.join().unwrap(), Some(id));
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The goroutine, for [`crate::suspend_g`] (valid while it has not finished).
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<()>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// assert_eq!(h.goroutine().id(), h.id());
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn goroutine(&self) -> crate::Goroutine {
        self.g
    }

    /// Whether it has finished.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<()>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// assert!(!h.is_finished()); // parked on the channel
    /// ch.close();
    /// while !h.is_finished() {
    ///     std::thread::yield_now();
    /// }
    /// ```
    pub fn is_finished(&self) -> bool {
        self.cell.lock().done
    }

    /// Waits for the goroutine and returns its value, or the panic that ended it. A goroutine
    /// parks; a thread outside the runtime sleeps, and panics with a deadlock report if every
    /// goroutine deadlocks (see [`crate::Builder::deadlock_detection`]).
    ///
    /// ```
    /// use safepoint_sched::{Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// // From a thread outside the runtime, and from a goroutine.
    /// assert_eq!(rt.spawn(|| 6 * 7).unwrap().join().unwrap(), 42);
    /// let v = rt.block_on(|| go(|| "inner").join().unwrap());
    /// assert_eq!(v, "inner");
    /// ```
    pub fn join(self) -> Result<T, JoinError> {
        self.join_or_deadlock().unwrap_or_else(|report| panic!("{report}"))
    }

    /// [`JoinHandle::join`], with a deadlock seen by a thread outside the runtime returned as
    /// an error instead of a panic (a goroutine that joins is itself part of any deadlock,
    /// and never gets one).
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// // A goroutine that waits for a value nobody will send: every goroutine is asleep.
    /// let ch = Chan::<u8>::new(0);
    /// let h = rt.spawn(move || ch.recv()).unwrap();
    /// let report = h.join_or_deadlock().unwrap_err();
    /// assert!(report.to_string().contains("deadlock"), "{report}");
    /// ```
    pub fn join_or_deadlock(self) -> Result<Result<T, JoinError>, crate::DeadlockReport> {
        if crate::runtime::current_g().is_some() {
            crate::park(crate::WaitReason::Join, |r| {
                let mut s = self.cell.lock();
                if s.done {
                    return false;
                }
                s.waiter = Waiter::Goroutine(r);
                true
            });
        } else {
            let note = Arc::new(Note::new());
            {
                let mut s = self.cell.lock();
                if !s.done {
                    s.waiter = Waiter::Thread(note.clone());
                    // Not done, so the goroutine still runs on its G, owned by its runtime.
                    let sched =
                        self.g.g.get().owner.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    drop(s);
                    // Issue 4: a deadlock of every goroutine wakes us with its report.
                    let report = crate::deadlock::wait_outside(sched.as_deref(), &note, || {
                        self.cell.lock().done
                    });
                    if let Some(report) = report {
                        return Err(report);
                    }
                }
            }
        }
        let mut s = self.cell.lock();
        debug_assert!(s.done);
        Ok(s.result.take().expect("join: result taken twice").map_err(|e| *e))
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let mut s = self.cell.lock();
        if !s.done {
            // Detach: the goroutine reports a panic itself when it finishes.
            s.detached = true;
        } else if let Some(Err(e)) = s.result.take()
            && !e.is_shutdown()
        {
            // Finished with a panic and dropped unjoined: nobody else will say so.
            crate::message(format_args!("{e}"));
        }
    }
}
