//! Every knob of the README's configuration table, read from the environment as an embedder's
//! process reads it: for each, a valid value takes effect, a bare `SAFEPOINT_DEBUG` key is
//! `key=1`, and a malformed value is reported once through the message sink and ignored. An
//! unknown key is reported once however many builders read the list. The table is read from
//! the README, so a knob added there without a case here fails the test.
//!
//! Each case runs in a child process (this test binary re-run with `KNOBS_CHILD` set), since
//! the environment and the message sink are process-wide.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use safepoint::gc::Gc;
use safepoint::sched::{Runtime, env::DEBUG_KEYS, go, set_message_sink, stop_the_world, yield_now};

/// What a child saw, `name -> value`, as it printed it.
type Report = BTreeMap<String, String>;

/// Whether a stop of the world stops a goroutine spinning without a safepoint (it does so by
/// the preemption signal, at once; with `asyncpreemptoff` the stop waits until the spinner
/// gives up after 2 s).
fn spinner_is_preempted(rt: &Runtime) -> bool {
    rt.block_on(|| {
        let started = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (s, d, r) = (started.clone(), done.clone(), release.clone());
        let spinner = go(move || {
            s.store(true, Ordering::SeqCst);
            let t0 = Instant::now();
            // No poll, no call that reaches a safepoint: only the signal can stop it.
            while !r.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(2) {
                std::hint::spin_loop();
            }
            d.store(true, Ordering::SeqCst);
        });
        while !started.load(Ordering::SeqCst) {
            yield_now();
        }
        let stop = stop_the_world("knob test");
        let stopped_while_spinning = !done.load(Ordering::SeqCst);
        drop(stop);
        release.store(true, Ordering::SeqCst);
        spinner.join().unwrap();
        stopped_while_spinning
    })
}

/// The child: builds a runtime and a collector from the environment (twice each, as a program
/// with several would) and prints what they took from it and what the sink received.
fn child() {
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let g = got.clone();
    set_message_sink(Some(Box::new(move |m: &str| g.lock().unwrap().push(m.to_string()))));
    let rt = Runtime::builder().build().unwrap();
    let _again = Runtime::builder().procs(1).build().unwrap();
    let gc = Gc::new(&rt).unwrap();
    let _again = Gc::new(&rt).unwrap();
    let c = gc.config();
    let mut out = vec![
        format!("procs={}", rt.handle().procs()),
        format!("cpus={}", std::thread::available_parallelism().map_or(1, |n| n.get())),
        format!("schedcheck={}", rt.handle().schedcheck()),
        format!("gc_percent={}", c.gc_percent),
        format!("memory_limit={}", c.memory_limit),
        format!("gctrace={}", c.trace),
        format!("gccheckmark={}", c.checkmark),
        format!("gcpoison={}", c.poison),
        format!("gcstoptheworld={}", c.stop_the_world),
    ];
    if std::env::var_os("KNOBS_PREEMPT").is_some() {
        let two = Runtime::builder().procs(2).build().unwrap();
        out.push(format!("preempted={}", spinner_is_preempted(&two)));
    }
    if std::env::var_os("KNOBS_SCHEDTRACE").is_some() {
        // Up to 2 s for sysmon's first line (a line every 1 to 10 ms when on).
        let t0 = Instant::now();
        let seen = || got.lock().unwrap().iter().any(|m| m.starts_with("SCHED "));
        while !seen() && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        out.push(format!("schedtrace_lines={}", seen()));
    }
    drop(gc);
    drop(_again);
    drop(rt); // writes the execution trace, if on
    if let Some(f) = std::env::var_os("SAFEPOINT_TRACE") {
        let written = std::fs::read_to_string(&f).is_ok_and(|s| s.contains("traceEvents"));
        out.push(format!("trace_written={written}"));
    }
    set_message_sink(None);
    let warnings: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        // The runtime's warnings (not schedtrace or gctrace lines).
        .filter(|m| m.starts_with("safepoint: "))
        .map(|m| m.replace('\n', " "))
        .collect();
    out.push(format!("warnings={}", warnings.len()));
    for w in warnings {
        out.push(format!("warning={w}"));
    }
    println!("KNOBS-BEGIN\n{}\nKNOBS-END", out.join("\n"));
}

/// Runs the child with `env` set (and every knob variable not in it removed).
fn run(env: &[(&str, &str)]) -> (Report, Vec<String>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "knobs_child", "--nocapture", "--test-threads=1"]);
    for v in ["SAFEPOINT_MAXPROCS", "SAFEPOINT_GC", "SAFEPOINT_MEMLIMIT", "SAFEPOINT_DEBUG"] {
        cmd.env_remove(v);
    }
    cmd.env_remove("SAFEPOINT_TRACE").env("KNOBS_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child {env:?}: {}\n{stdout}", out.status);
    let body = stdout
        .split("KNOBS-BEGIN\n")
        .nth(1)
        .and_then(|s| s.split("\nKNOBS-END").next())
        .unwrap_or_else(|| panic!("child {env:?} printed no report: {stdout}"));
    let mut report = Report::new();
    let mut warnings = Vec::new();
    for line in body.lines() {
        let (k, v) = line.split_once('=').unwrap();
        if k == "warning" {
            warnings.push(v.to_string());
        } else {
            report.insert(k.to_string(), v.to_string());
        }
    }
    (report, warnings)
}

/// Runs the child and checks each `(name, value)` of `want`, and that it received exactly the
/// warnings containing `warn` (none if empty), each once.
fn case(env: &[(&str, &str)], want: &[(&str, &str)], warn: &[&str]) {
    let (r, warnings) = run(env);
    for (k, v) in want {
        let got = r.get(*k).unwrap_or_else(|| panic!("{env:?}: no {k} in {r:?}"));
        assert_eq!(got, v, "{env:?}: {k}");
    }
    assert_eq!(warnings.len(), warn.len(), "{env:?}: warnings {warnings:?}");
    for (w, want) in warnings.iter().zip(warn) {
        assert!(w.starts_with("safepoint: ") && w.contains(want), "{env:?}: {w:?} lacks {want:?}");
    }
}

/// The `SAFEPOINT_DEBUG` cases of one key, checked on the report line `name` (`on` when the
/// knob is on, `off` when not): bare and `=1` are on, `=0` is off, a word is a warning and off,
/// and the last entry wins.
fn debug_key(key: &str, name: &str, (on, off): (&str, &str), extra: &[(&str, &str)]) {
    for (spec, value, warn) in [
        (key.to_string(), on, None),
        (format!("{key}=1"), on, None),
        (format!("{key}=0"), off, None),
        (format!("{key}=yes"), off, Some(format!("{key}=\"yes\" is not a number"))),
        (format!("{key}=1,{key}=0"), off, None),
    ] {
        let mut env = vec![("SAFEPOINT_DEBUG", spec.as_str())];
        env.extend_from_slice(extra);
        let warn: Vec<&str> = warn.iter().map(String::as_str).collect();
        case(&env, &[(name, value)], &warn);
    }
}

/// The knobs the README's configuration table lists: `SAFEPOINT_X` or `SAFEPOINT_DEBUG:key`.
fn readme_knobs() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = readme.split("## Configuration").nth(1).expect("a Configuration section");
    let mut var = String::new();
    let mut knobs = Vec::new();
    for row in table.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells[1] == "variable" || cells[1].starts_with("---") {
            continue;
        }
        if !cells[1].is_empty() {
            var = cells[1].trim_matches('`').to_string();
        }
        if var == "SAFEPOINT_DEBUG" {
            let key = cells[2].trim_matches('`').split('=').next().unwrap().to_string();
            knobs.push(format!("SAFEPOINT_DEBUG:{key}"));
        } else {
            knobs.push(var.clone());
        }
    }
    knobs
}

/// Not a test of its own: the child's body, run when `KNOBS_CHILD` is set.
#[test]
fn knobs_child() {
    if std::env::var_os("KNOBS_CHILD").is_some() {
        child();
    }
}

#[test]
fn every_knob_in_the_readme_parses_from_the_environment() {
    if std::env::var_os("KNOBS_CHILD").is_some() {
        return;
    }
    let knobs = readme_knobs();
    // The table and the parser's list of keys agree.
    for k in DEBUG_KEYS {
        assert!(knobs.contains(&format!("SAFEPOINT_DEBUG:{k}")), "{k} is not in the README");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    let trace = std::env::temp_dir().join(format!("knobs-trace-{}.json", std::process::id()));
    let trace = trace.to_str().unwrap().to_string();
    let mut covered = Vec::new();
    for knob in &knobs {
        match knob.as_str() {
            "SAFEPOINT_MAXPROCS" => {
                case(&[("SAFEPOINT_MAXPROCS", "3")], &[("procs", "3")], &[]);
                for bad in ["0", "1025", "three"] {
                    case(
                        &[("SAFEPOINT_MAXPROCS", bad)],
                        &[("procs", &cpus)],
                        &[&format!("SAFEPOINT_MAXPROCS={bad:?} is not a number from 1 to 1024")],
                    );
                }
            }
            "SAFEPOINT_GC" => {
                case(&[("SAFEPOINT_GC", "50")], &[("gc_percent", "50")], &[]);
                case(&[("SAFEPOINT_GC", "off")], &[("gc_percent", &u32::MAX.to_string())], &[]);
                case(
                    &[("SAFEPOINT_GC", "lots")],
                    &[("gc_percent", "100")],
                    &["SAFEPOINT_GC=\"lots\" is not a whole number"],
                );
            }
            "SAFEPOINT_MEMLIMIT" => {
                let none = usize::MAX.to_string();
                case(&[("SAFEPOINT_MEMLIMIT", "8MiB")], &[("memory_limit", "8388608")], &[]);
                case(&[("SAFEPOINT_MEMLIMIT", "4096")], &[("memory_limit", "4096")], &[]);
                case(&[("SAFEPOINT_MEMLIMIT", "off")], &[("memory_limit", &none)], &[]);
                case(
                    &[("SAFEPOINT_MEMLIMIT", "10MB")],
                    &[("memory_limit", &none)],
                    &["SAFEPOINT_MEMLIMIT: \"10MB\": the suffix must be"],
                );
            }
            "SAFEPOINT_TRACE" => {
                case(&[("SAFEPOINT_TRACE", &trace)], &[("trace_written", "true")], &[]);
                let _ = std::fs::remove_file(&trace);
                // A file that cannot be written: said through the sink, not a panic.
                let (r, warnings) = run(&[("SAFEPOINT_TRACE", "/nonexistent-dir/trace.json")]);
                assert_eq!(r["trace_written"], "false");
                assert!(
                    warnings.iter().any(|w| w.contains("/nonexistent-dir/trace.json")),
                    "{warnings:?}"
                );
            }
            "SAFEPOINT_DEBUG:asyncpreemptoff" => debug_key(
                "asyncpreemptoff",
                "preempted",
                ("false", "true"),
                &[("KNOBS_PREEMPT", "1")],
            ),
            "SAFEPOINT_DEBUG:schedtrace" => {
                // A bare key is schedtrace=1: a line every millisecond.
                let on = ("true", "false");
                debug_key("schedtrace", "schedtrace_lines", on, &[("KNOBS_SCHEDTRACE", "1")]);
                case(
                    &[("SAFEPOINT_DEBUG", "schedtrace=20"), ("KNOBS_SCHEDTRACE", "1")],
                    &[("schedtrace_lines", "true")],
                    &[],
                );
            }
            k if k.starts_with("SAFEPOINT_DEBUG:") => {
                let key = &k["SAFEPOINT_DEBUG:".len()..];
                debug_key(key, key, ("true", "false"), &[]);
            }
            k => panic!("the README lists {k}, which has no case here"),
        }
        covered.push(knob.clone());
    }
    // An unknown key: one warning, though two runtimes and two collectors read the list.
    case(
        &[("SAFEPOINT_DEBUG", "gctrace=0,nosuchknob=1")],
        &[("gctrace", "false")],
        &["SAFEPOINT_DEBUG: unknown key \"nosuchknob\" ignored"],
    );
    assert!(covered.len() >= 10, "the README's table read as {covered:?}");
}
