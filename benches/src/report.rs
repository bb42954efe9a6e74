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

/// Prints the readable line, then the JSON line (`{"workload": ..., fields...}`), last. The
/// JSON goes through `serde_json`, so strings are escaped and the line always parses; fields
/// keep their order; reals carry three decimals, and one that is not finite is `null`.
pub fn emit(workload: &str, args: &str, fields: &[(&str, Value)]) {
    let (human, json) = lines(workload, args, fields);
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

/// The readable line and the JSON line of [`emit`].
pub fn lines(workload: &str, args: &str, fields: &[(&str, Value)]) -> (String, String) {
    let mut human = format!("{workload:<10} {args:<16}");
    let mut json = serde_json::Map::new();
    json.insert("workload".into(), workload.into());
    json.insert("args".into(), args.into());
    for (k, v) in fields {
        let j = match v {
            Value::Int(i) => {
                let _ = write!(human, "  {k}={i}");
                serde_json::Value::from(*i)
            }
            Value::Float(f) => {
                let _ = write!(human, "  {k}={f:.2}");
                // from_f64 is None for NaN and infinities: null.
                serde_json::Number::from_f64((f * 1000.0).round() / 1000.0)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Str(s) => {
                let _ = write!(human, "  {k}={s}");
                serde_json::Value::from(s.as_str())
            }
        };
        json.insert((*k).to_string(), j);
    }
    (human, serde_json::Value::Object(json).to_string())
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

/// Parses argument `i` as a whole number, or `default` if it is not given. An argument that
/// is given but is not a whole number ends the process with status 2 and says why: a typo
/// must not silently run the default size.
pub fn arg_num(args: &[String], i: usize, default: u64) -> u64 {
    match args.get(i) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("stress: argument {} is {s:?}, not a whole number", i + 1);
            std::process::exit(2)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{Value, lines};

    /// Quotes, backslashes and control characters in arguments and string figures are escaped,
    /// not-finite reals are null, and the fields keep their order: the line parses.
    #[test]
    fn the_json_line_parses_whatever_the_strings_hold() {
        let fields = [
            ("n", Value::Int(-3)),
            ("ms", Value::Float(1.23456)),
            ("bad", Value::Float(f64::NAN)),
            ("note", Value::Str("say \"hi\"\\\n\ttab".into())),
        ];
        let (_, json) = lines("w\"x", "a\\b", &fields);
        let v: serde_json::Value = serde_json::from_str(&json).expect(&json);
        assert_eq!(v["workload"], "w\"x");
        assert_eq!(v["args"], "a\\b");
        assert_eq!(v["n"], -3);
        assert_eq!(v["ms"], 1.235);
        assert!(v["bad"].is_null());
        assert_eq!(v["note"], "say \"hi\"\\\n\ttab");
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["workload", "args", "n", "ms", "bad", "note"]);
    }
}
