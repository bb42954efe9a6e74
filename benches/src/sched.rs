//! Scheduler workloads: spawn, yield, stw, parked.

/// Runs scheduler workload `w`.
pub fn run(w: &str, _args: &[String]) {
    eprintln!("{w}: not built yet");
}
