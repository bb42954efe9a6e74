//! `stress WORKLOAD ARGS...`: runs one workload, prints a readable line, then one JSON line.
//! `stress all` runs the whole suite with default sizes (the README's main job).

use safepoint_benches as b;

const USAGE: &str = "usage: stress WORKLOAD ARGS...
  spawn N            spawn and join N goroutines         -> ns_per_op
  yield N            N yields, two goroutines on one P   -> ns_per_op
  stw K poll|nopoll  400 stops with K spinners           -> p50_us p99_us max_us
  parked N           N goroutines parked at once         -> rss_kb_per_g
  frames N           N push+set-safepoint+pop of 4 slots -> ns_per_op
  walk DEPTH         walk a stack DEPTH frames deep      -> ns_per_slot
  pingpong N         N round trips over 2 unbuffered chans -> ns_per_op
  chan N             N items through a 128-slot channel -> ns_per_op
  mutex N            N lock+unlock, 4 goroutines, 2 Ps   -> ns_per_op
  timers N           N sleeps of 1 ms released at once   -> p50_late_us p99_late_us max_late_us
  refchan N          N round trips of a reference over 2 unbuffered RefChans, and N of an
                     integer, alternated             -> ref_ns_per_rt int_ns_per_rt ratio
  binary-trees N     Benchmarks Game binary-trees        -> wall_ms peak_rss_kb gc_cycles p99_pause_us max_pause_us
  gcbench            Boehm's GCBench shape               -> (same)
  churn G            G goroutines churning depth-8 trees -> (same) + check
  gpause G           G goroutines parked holding depth-3 trees, one churning depth-6
                     trees, 50 forced collections -> cycle_ms cycle_us_per_g p50_pause_us
                     p99_pause_us max_pause_us gc_cycles
  binary-trees-compiled N, gcbench-compiled, churn-compiled G
                     the same, as compiled code runs them: a managed frame with stack
                     maps, a safepoint and a pinned section per call, a poll per loop
                     back-edge, the collector's trusted RawMutator path -> (same)
  binary-trees-compiled-batched N, gcbench-compiled-batched, churn-compiled-batched G
                     the same, BATCHED: subtrees of up to 127 nodes built and 2,047
                     walked in one section with no frame or poll (not what a compiler
                     emits; shows what batching buys)
  binary-trees-section N
                     binary-trees as compiled code would run it on the safe branded
                     sections (SectionMutator): a section frame, a safepoint and a section
                     per call, every field access checked against the node's shape -> (same)
  weak N E           N weak-handle reads against N field loads (marking off), then an
                     ephemeron table of E chained entries against plain values
                     -> raw_ratio eph_extra_ms eph_rounds eph_max_stop_us
  soak --seconds S --goroutines G
                     everything at once for S seconds, G workers, collections
                     back to back with checkmark and poison -> cycles stops
                     max_pause_us goroutines_run panics_caught failures (must be 0)
  all                every workload above but soak at default sizes (the GC ones first and
                     smaller: binary-trees 16, gcbench, churn 100; each in a child process)
  all W[:ARG,...]... only the workloads named, each with its arguments, each in a child
                     process (`stress all binary-trees:12 spawn:1000`)
  A number argument that is not a whole number is an error (status 2). `all` runs on
  after a workload fails, then exits 1 naming each that failed.
Option (collector workloads): --plot DIR  draws DIR/WORKLOAD-heap.svg (the heap over time,
                     sampled every ms) and DIR/WORKLOAD-pauses.svg (the pause histogram)";

fn run(workload: &str, args: &[String]) -> bool {
    match workload {
        "spawn" | "yield" | "stw" | "parked" => b::sched::run(workload, args),
        "frames" | "walk" => b::stackmap::run(workload, args),
        "pingpong" | "chan" | "mutex" | "timers" => b::sync::run(workload, args),
        "binary-trees"
        | "gcbench"
        | "churn"
        | "binary-trees-compiled"
        | "gcbench-compiled"
        | "churn-compiled"
        | "binary-trees-compiled-batched"
        | "gcbench-compiled-batched"
        | "churn-compiled-batched"
        | "binary-trees-section" => b::gc::run(workload, args),
        "soak" => b::soak::run(args),
        "weak" => b::weak::run(args),
        "refchan" => b::refchan::run(args),
        "gpause" => b::gpause::run(args),
        _ => return false,
    }
    true
}

/// Runs `stress W ARGS` in a child process; whether it succeeded (a failure is reported).
fn child(w: &str, a: &[&str]) -> bool {
    let exe = std::env::current_exe().expect("stress: own path");
    match std::process::Command::new(exe).arg(w).args(a).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("stress all: {w} {}: {s}", a.join(" "));
            false
        }
        Err(e) => {
            eprintln!("stress all: {w}: {e}");
            false
        }
    }
}

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = argv.iter().position(|a| a == "--plot") {
        let Some(dir) = argv.get(i + 1).cloned() else {
            eprintln!("--plot needs a directory\n{USAGE}");
            std::process::exit(2);
        };
        argv.drain(i..i + 2);
        if let Some(w) = argv.first() {
            b::plot::set(dir.into(), w);
        }
    }
    let Some(workload) = argv.first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    if workload == "all" && argv.len() > 1 {
        // A chosen list, each workload in a child process, in the order given.
        let mut failed = Vec::new();
        for spec in &argv[1..] {
            let (w, a) = spec.split_once(':').unwrap_or((spec, ""));
            let a: Vec<&str> = a.split(',').filter(|x| !x.is_empty()).collect();
            if !child(w, &a) {
                failed.push(spec.as_str());
            }
        }
        if !failed.is_empty() {
            eprintln!("stress all: failed: {}", failed.join(" "));
            std::process::exit(1);
        }
        return;
    }
    if workload == "all" {
        // The GC workloads first, at sizes that keep `all` short (5 to 10 s together), each in a
        // child process as the Go peer runs every workload: `peak_rss_kb` is the process's peak
        // (getrusage), which the workloads below (parked's 100000 goroutines) would otherwise
        // set, and Linux carries a parent's peak into a child across exec, so the children must
        // start while this process is still small.
        // A child that fails is reported and the suite goes on; `all` then exits 1 at the end.
        // (A workload run in this process that fails panics or exits non-zero at once.)
        let mut failed = Vec::new();
        for (w, a) in [("binary-trees", &["16"][..]), ("gcbench", &[][..]), ("churn", &["100"][..])]
        {
            if !child(w, a) {
                failed.push(w);
            }
        }
        for (w, a) in [
            ("spawn", &["200000"][..]),
            ("yield", &["1000000"][..]),
            ("stw", &["2", "poll"][..]),
            ("parked", &["100000"][..]),
            ("frames", &["10000000"][..]),
            ("walk", &["10000"][..]),
            ("pingpong", &["200000"][..]),
            ("chan", &["2000000"][..]),
            ("mutex", &["4000000"][..]),
            ("timers", &["10000"][..]),
        ] {
            let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            run(w, &a);
        }
        if !failed.is_empty() {
            eprintln!("stress all: failed: {}", failed.join(", "));
            std::process::exit(1);
        }
        return;
    }
    if !run(workload, &argv[1..]) {
        eprintln!("unknown workload {workload:?}\n{USAGE}");
        std::process::exit(2);
    }
}
