//! Where the runtime's messages go: `gctrace` and `schedtrace` lines, warnings, reports of
//! goroutines that panicked with nobody to join them, and fatal errors. By default, standard
//! error, as Go's runtime writes them; an embedder may send them elsewhere with
//! [`set_message_sink`] (a log, a test's buffer, a UI).

use std::fmt;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A receiver of the runtime's messages (see [`set_message_sink`]).
///
/// ## Where messages come from, and what a sink may do
///
/// Messages are written from goroutines (a collector's driver writes `gctrace` after its
/// stop ends), from sysmon (a thread with no P: `schedtrace`, the watchdog's report), from the
/// thread dropping a runtime, and from whatever thread meets a fatal error, which may be a
/// stopper with the world stopped. So the default writes each message with one `write(2)`
/// system call on file descriptor 2: no Rust lock (standard error's lock may be held by a
/// goroutine that a stop holds in place), and nothing the runtime's own threads could wait
/// for. Finding the sink takes one atomic load, no lock, for the same reason.
///
/// A sink is called on those same threads, so it must be quick and must not wait on anything
/// a goroutine may hold: it may format, allocate (the C library's allocator is never
/// interrupted by a hold) and take a lock of its own that nothing else holds for long (a
/// sink's buffer, say), but not a goroutine-aware lock or a channel of the runtime, and not
/// a lock that goroutines hold across long sections. It must not panic (a panic during a fatal
/// error aborts the process without the message).
///
/// Each message is whole (possibly several lines, a fatal error's report included), without a
/// trailing newline; the default adds one.
pub type MessageSink = dyn Fn(&str) + Send + Sync;

/// The sink, or null for standard error. Each sink set is leaked (kept for the process's
/// life), so that a message being written through the old one when another is set still
/// calls live code: setting a sink is rare, and this keeps the message path free of locks.
static SINK: AtomicPtr<Box<MessageSink>> = AtomicPtr::new(core::ptr::null_mut());

/// Sends the runtime's messages (`gctrace`, `schedtrace`, warnings, fatal errors; see
/// [`MessageSink`] on where they come from) to `sink`, or back to standard error with `None`.
/// Process-wide, as Go's standard error is: every runtime in the process uses it.
///
/// The sink is called on the runtime's threads, sometimes with the world stopped: it must be
/// quick and must not wait on anything a goroutine may hold (see [`MessageSink`]). Each sink
/// set is kept allocated until the process exits.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let lines = Arc::new(Mutex::new(Vec::<String>::new()));
/// let l = lines.clone();
/// safepoint_arch::set_message_sink(Some(Box::new(move |m: &str| {
///     l.lock().unwrap().push(m.to_string())
/// })));
/// safepoint_arch::message(format_args!("hello from the runtime"));
/// safepoint_arch::set_message_sink(None);
/// assert_eq!(lines.lock().unwrap().as_slice(), ["hello from the runtime"]);
/// ```
pub fn set_message_sink(sink: Option<Box<MessageSink>>) {
    let p = sink.map_or(core::ptr::null_mut(), |s| Box::into_raw(Box::new(s)));
    // Release pairs with the Acquire in `message`: a writer that finds the pointer sees the
    // sink it points to. The old one is leaked (see `SINK`).
    SINK.store(p, Ordering::Release);
}

/// Writes one message through the sink (standard error by default). For the runtime's own
/// messages and an embedder's that belong with them.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// let got = Arc::new(Mutex::new(Vec::new()));
/// let g = got.clone();
/// safepoint_arch::set_message_sink(Some(Box::new(move |m: &str| {
///     g.lock().unwrap().push(m.to_string())
/// })));
/// safepoint_arch::message(format_args!("myvm: {} goroutines left", 3));
/// safepoint_arch::set_message_sink(None);
/// assert!(got.lock().unwrap().contains(&"myvm: 3 goroutines left".to_string()));
/// ```
pub fn message(args: fmt::Arguments<'_>) {
    // Acquire pairs with the Release store in `set_message_sink`.
    let p = SINK.load(Ordering::Acquire);
    if p.is_null() {
        let mut line = fmt::format(args);
        line.push('\n');
        write_stderr(line.as_bytes());
    } else {
        let text;
        let s = match args.as_str() {
            Some(s) => s,
            None => {
                text = fmt::format(args);
                &text
            }
        };
        // SAFETY: a non-null pointer came from `Box::into_raw` in `set_message_sink` and is
        // never freed.
        unsafe { (*p)(s) }
    }
}

/// Writes `bytes` to file descriptor 2, all of them, with no lock (see [`MessageSink`]).
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}
