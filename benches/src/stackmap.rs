//! Managed-stack workloads: frames, walk.

/// Runs managed-stack workload `w`.
pub fn run(w: &str, _args: &[String]) {
    eprintln!("{w}: not built yet");
}
