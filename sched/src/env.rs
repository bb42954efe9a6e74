//! The environment variables every part of safepoint reads, parsed in one place.
//!
//! * `SAFEPOINT_DEBUG`: debugging knobs, a comma-separated list of `key=value` entries, as
//!   Go's `GODEBUG`. A bare `key` is `key=1`; the last entry for a key wins; spaces around
//!   keys and values are ignored. The scheduler and the collector read the same list through
//!   [`DebugVars`], so a key means the same in both. A key that no part of safepoint knows
//!   ([`DEBUG_KEYS`]), and a flag whose value is not a whole number, is reported once per
//!   process through the message sink ([`crate::set_message_sink`]; standard error by
//!   default), since a typo must not silently do nothing, and otherwise ignored.
//! * `SAFEPOINT_MAXPROCS`: the number of Ps of a runtime built without an explicit
//!   [`crate::Builder::procs`], as `GOMAXPROCS` is Go's ([`maxprocs`]).
//! * `SAFEPOINT_MEMLIMIT`: the collector's soft heap limit, as `GOMEMLIMIT` is Go's: bytes,
//!   with an optional suffix `B`, `KiB`, `MiB`, `GiB` or `TiB`, or `off` ([`parse_size`];
//!   the collector reads it).
//! * `SAFEPOINT_GC`: the collector's `gc_percent`, as `GOGC` (read by the collector).
//!
//! A malformed value is never a panic: it is reported once through the message sink and the
//! default stays in force.

use std::collections::HashSet;
use std::sync::Mutex;

/// Every key of `SAFEPOINT_DEBUG` that some part of safepoint reads. A key not in this list
/// is reported once as unknown.
pub const DEBUG_KEYS: &[&str] = &[
    // The scheduler's.
    "asyncpreemptoff",
    "schedcheck",
    "schedtrace",
    // The collector's.
    "gctrace",
    "gccheckmark",
    "gcpoison",
    "gcstoptheworld",
];

/// A parsed `SAFEPOINT_DEBUG` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugVars {
    /// `(key, value)` in the order given; a bare key has the value `"1"`.
    entries: Vec<(String, String)>,
}

impl DebugVars {
    /// Parses `spec` (`"gctrace=1,gcpoison"`). Empty entries are skipped; nothing is an error
    /// here (see [`DebugVars::problems`]).
    ///
    /// ```
    /// use safepoint_sched::env::DebugVars;
    /// let d = DebugVars::parse("gctrace, schedtrace=500");
    /// assert_eq!(d.get("gctrace"), Some("1")); // a bare key is key=1
    /// assert_eq!(d.get("schedtrace"), Some("500"));
    /// ```
    pub fn parse(spec: &str) -> DebugVars {
        let entries = spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e, "1"));
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        DebugVars { entries }
    }

    /// `SAFEPOINT_DEBUG` as set now (empty if unset), with its problems reported on standard
    /// error, each once per process.
    ///
    /// ```
    /// use safepoint_sched::env::DebugVars;
    /// // SAFEPOINT_DEBUG as set now; an empty list when it is unset.
    /// let d = DebugVars::from_env();
    /// if std::env::var_os("SAFEPOINT_DEBUG").is_none() {
    ///     assert_eq!(d, DebugVars::default());
    /// }
    /// ```
    pub fn from_env() -> DebugVars {
        let v = DebugVars::parse(&std::env::var("SAFEPOINT_DEBUG").unwrap_or_default());
        v.report();
        v
    }

    /// The value of `key` (the last entry for it), if set.
    ///
    /// ```
    /// use safepoint_sched::env::DebugVars;
    /// let d = DebugVars::parse("schedtrace=10,schedtrace=20");
    /// assert_eq!(d.get("schedtrace"), Some("20")); // the last entry wins
    /// assert_eq!(d.get("gctrace"), None);
    /// ```
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A flag: `Some(true)` for a nonzero whole number (a bare key is `1`), `Some(false)` for
    /// `0`, `None` if the key is unset or its value is not a whole number (a problem).
    ///
    /// ```
    /// use safepoint_sched::env::DebugVars;
    /// let d = DebugVars::parse("gcpoison,gctrace=0,schedcheck=yes");
    /// assert_eq!(d.flag("gcpoison"), Some(true));
    /// assert_eq!(d.flag("gctrace"), Some(false));
    /// assert_eq!(d.flag("schedcheck"), None); // not a number: a problem
    /// assert_eq!(d.flag("gccheckmark"), None); // unset
    /// ```
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.parse::<u64>().ok()).map(|n| n != 0)
    }

    /// What is wrong with the list, one message each: unknown keys and values that are not
    /// whole numbers (every known key is a flag).
    ///
    /// ```
    /// use safepoint_sched::env::DebugVars;
    /// let p = DebugVars::parse("gctrace=1,gctrac=1").problems();
    /// assert_eq!(p.len(), 1);
    /// assert!(p[0].contains("unknown key \"gctrac\""));
    /// ```
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.entries {
            if !DEBUG_KEYS.contains(&k.as_str()) {
                let known = DEBUG_KEYS.join(", ");
                out.push(format!("SAFEPOINT_DEBUG: unknown key {k:?} ignored (known: {known})"));
            } else if v.parse::<u64>().is_err() {
                out.push(format!("SAFEPOINT_DEBUG: {k}={v:?} is not a number; {k} ignored"));
            }
        }
        out
    }

    /// Writes each of [`DebugVars::problems`] through the message sink (standard error by
    /// default) unless this process has written it before; returns how many it wrote.
    ///
    /// ```
    /// use safepoint_sched::env::DebugVars;
    /// let d = DebugVars::parse("a_key_only_this_example_uses");
    /// assert_eq!(d.report(), 1); // written through the message sink
    /// assert_eq!(d.report(), 0); // once per process
    /// ```
    pub fn report(&self) -> usize {
        self.problems().into_iter().filter(|m| warn_once(m)).count()
    }
}

/// Writes `msg` through the message sink ([`crate::set_message_sink`]; standard error by
/// default) the first time this process sees it; whether it wrote it.
///
/// ```
/// use safepoint_sched::env::warn_once;
/// assert!(warn_once("example: a warning only this example gives"));
/// assert!(!warn_once("example: a warning only this example gives")); // once per process
/// ```
pub fn warn_once(msg: &str) -> bool {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let first = SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(msg.to_string());
    if first {
        crate::message(format_args!("safepoint: {msg}"));
    }
    first
}

/// Parses a `SAFEPOINT_MAXPROCS` value: a whole number from 1 to 1024.
///
/// ```
/// use safepoint_sched::env::parse_maxprocs;
/// assert_eq!(parse_maxprocs("8"), Ok(8));
/// assert!(parse_maxprocs("0").is_err());
/// assert!(parse_maxprocs("many").is_err());
/// ```
pub fn parse_maxprocs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("SAFEPOINT_MAXPROCS={s:?} is not a number from 1 to 1024; ignored")),
    }
}

/// `SAFEPOINT_MAXPROCS`, if set and valid (a bad value is reported once and ignored).
///
/// ```
/// // None unless SAFEPOINT_MAXPROCS is set to a number from 1 to 1024.
/// if let Some(n) = safepoint_sched::env::maxprocs() {
///     assert!((1..=1024).contains(&n));
/// }
/// ```
pub fn maxprocs() -> Option<usize> {
    let s = std::env::var("SAFEPOINT_MAXPROCS").ok()?;
    parse_maxprocs(&s).map_err(|e| warn_once(&e)).ok()
}

/// Parses a size in bytes as `GOMEMLIMIT` is written: a whole number with an optional suffix
/// `B`, `KiB`, `MiB`, `GiB` or `TiB` (powers of 1024), or `off` (`usize::MAX`: no limit).
///
/// ```
/// use safepoint_sched::env::parse_size;
/// assert_eq!(parse_size("64MiB"), Ok(64 << 20));
/// assert_eq!(parse_size("1000"), Ok(1000));
/// assert_eq!(parse_size("off"), Ok(usize::MAX));
/// assert!(parse_size("64MB").is_err()); // powers of 1024 only, as GOMEMLIMIT
/// ```
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    if t == "off" {
        return Ok(usize::MAX);
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, suffix) = t.split_at(digits);
    let shift = match suffix.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err(format!("{s:?}: the suffix must be B, KiB, MiB, GiB or TiB")),
    };
    let n: usize = n.parse().map_err(|_| format!("{s:?} is not a size in bytes"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// `SAFEPOINT_MEMLIMIT`, if set and valid (a bad value is reported once and ignored).
///
/// ```
/// // None unless SAFEPOINT_MEMLIMIT is set to a valid size.
/// if let Some(bytes) = safepoint_sched::env::memlimit() {
///     assert!(bytes > 0);
/// }
/// ```
pub fn memlimit() -> Option<usize> {
    let s = std::env::var("SAFEPOINT_MEMLIMIT").ok()?;
    parse_size(&s).map_err(|e| warn_once(&format!("SAFEPOINT_MEMLIMIT: {e}; ignored"))).ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bare_keys_are_one_values_are_kept_and_the_last_entry_wins() {
        let d = DebugVars::parse("gctrace, gcpoison=0 ,schedcheck=2,,gcpoison=1");
        assert_eq!(d.get("gctrace"), Some("1"));
        assert_eq!(d.flag("gctrace"), Some(true));
        assert_eq!(d.flag("schedcheck"), Some(true));
        assert_eq!(d.flag("gcpoison"), Some(true));
        assert_eq!(d.flag("asyncpreemptoff"), None);
        assert_eq!(DebugVars::parse("asyncpreemptoff=0").flag("asyncpreemptoff"), Some(false));
        assert_eq!(DebugVars::parse(""), DebugVars::default());
        assert!(DebugVars::parse(" , ,").problems().is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_problems_not_panics() {
        let d = DebugVars::parse("gctrace=1,nosuchknob=3,gcpoison=yes,=1");
        let p = d.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("unknown key \"nosuchknob\""), "{p:?}");
        assert!(p[1].contains("gcpoison=\"yes\" is not a number"), "{p:?}");
        assert!(p[2].contains("unknown key \"\""), "{p:?}");
        assert_eq!(d.flag("gcpoison"), None);
        assert_eq!(d.flag("gctrace"), Some(true));
        assert!(DebugVars::parse("gctrace=1,schedcheck").problems().is_empty());
    }

    #[test]
    fn each_problem_is_reported_once_per_process() {
        // A key no other test uses, so that the process-wide set has not seen it.
        let d = DebugVars::parse("knob_only_this_test_uses,knob_only_this_test_uses=2");
        assert_eq!(d.problems().len(), 2);
        // The two entries make one message each, and the messages are equal: one printed.
        assert_eq!(d.report(), 1);
        assert_eq!(d.report(), 0);
        assert_eq!(DebugVars::parse("knob_only_this_test_uses").report(), 0);
    }

    /// The warning goes through the message sink an embedder sets, once.
    #[test]
    // The sink set is leaked by design (kept for the process's life), which Miri counts as a
    // leak.
    #[cfg_attr(miri, ignore)]
    fn an_unknown_key_is_reported_once_through_the_message_sink() {
        use std::sync::{Arc, Mutex as StdMutex};
        let got = Arc::new(StdMutex::new(Vec::<String>::new()));
        let g = got.clone();
        crate::set_message_sink(Some(Box::new(move |m: &str| {
            g.lock().unwrap().push(m.to_string())
        })));
        let first = DebugVars::parse("gctrace,knob_the_sink_test_uses=1").report();
        let again = DebugVars::parse("knob_the_sink_test_uses").report();
        crate::set_message_sink(None);
        assert_eq!((first, again), (1, 0));
        let got = got.lock().unwrap();
        let ours: Vec<&String> =
            got.iter().filter(|m| m.contains("knob_the_sink_test_uses")).collect();
        assert_eq!(ours.len(), 1, "{got:?}");
        assert!(
            ours[0]
                .starts_with("safepoint: SAFEPOINT_DEBUG: unknown key \"knob_the_sink_test_uses\""),
            "{}",
            ours[0]
        );
    }

    #[test]
    fn maxprocs_values() {
        assert_eq!(parse_maxprocs("4"), Ok(4));
        assert_eq!(parse_maxprocs(" 1024 "), Ok(1024));
        for bad in ["0", "1025", "-1", "four", ""] {
            assert!(parse_maxprocs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_gos_suffixes() {
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size(" 512MiB "), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("3TiB"), Ok(3 << 40));
        assert_eq!(parse_size("off"), Ok(usize::MAX));
        for bad in
            ["", "MiB", "1.5GiB", "10MB", "10 k", "-1", "99999999999999999999", "16777216TiB"]
        {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
