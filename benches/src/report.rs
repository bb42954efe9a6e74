//! Output conventions shared by all workloads.

use std::fmt::Write as _;
use std::io::Write as _;

/// A figure of a workload's result.
#[derive(Debug, Clone)]
pub enum Value {
    /// An integer figure.
    Int(i64),
    /// A real figure.
    Float(f64),
    /// A word.
    Str(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v as i64)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Int(v as i64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_string())
    }
}

/// Prints the readable line, then the JSON line (`{"workload": ..., fields...}`), last.
pub fn emit(workload: &str, args: &str, fields: &[(&str, Value)]) {
    let mut human = format!("{workload:<10} {args:<16}");
    let mut json = format!("{{\"workload\":\"{workload}\",\"args\":\"{args}\"");
    for (k, v) in fields {
        match v {
            Value::Int(i) => {
                let _ = write!(human, "  {k}={i}");
                let _ = write!(json, ",\"{k}\":{i}");
            }
            Value::Float(f) => {
                let _ = write!(human, "  {k}={f:.2}");
                let _ = write!(json, ",\"{k}\":{f:.3}");
            }
            Value::Str(s) => {
                let _ = write!(human, "  {k}={s}");
                let _ = write!(json, ",\"{k}\":\"{s}\"");
            }
        }
    }
    json.push('}');
    // A reader that went away (`stress all | head -1`) ends the run quietly, not with a panic.
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{human}")
        .and_then(|()| writeln!(out, "{json}"))
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// The `p`-th percentile (0..=100) of `v`, which it sorts.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Resident set size of this process in KiB (from /proc/self/statm).
pub fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    pages * 4
}

/// Parses argument `i` as a number, or `default`.
pub fn arg_num(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}
