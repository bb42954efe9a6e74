//! The collector's environment: its knobs of `SAFEPOINT_DEBUG`, `SAFEPOINT_GC` and
//! `SAFEPOINT_MEMLIMIT` (parsed by `safepoint_sched::env`, shared by every part).

use safepoint_sched::env::DebugVars;

/// The collector's debugging knobs, as read from `SAFEPOINT_DEBUG`.
///
/// Keys (`1`, or the bare key, turns a knob on; `0` off): `gctrace` (one line per cycle
/// through the message sink), `gccheckmark` (verify every marking by re-marking from
/// scratch), `gcpoison` (fill freed objects with a pattern and catch reads and writes of freed
/// objects), `gcstoptheworld` (mark with the world stopped). The list is parsed by the
/// scheduler's [`safepoint_sched::env::DebugVars`], shared by every part of safepoint: keys
/// that belong to the scheduler are its own, and a key nobody knows is reported once through
/// the message sink ([`safepoint_sched::set_message_sink`]; standard error by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DebugKnobs {
    /// `gctrace=1`.
    pub gctrace: bool,
    /// `gccheckmark=1`.
    pub gccheckmark: bool,
    /// `gcpoison=1`.
    pub gcpoison: bool,
    /// `gcstoptheworld=1`.
    pub gcstoptheworld: bool,
}

impl DebugKnobs {
    /// The knobs set in `SAFEPOINT_DEBUG` (all off if it is unset); its problems are reported
    /// through the message sink, each once per process.
    ///
    /// ```
    /// use safepoint_gc::DebugKnobs;
    /// let k = DebugKnobs::from_env(); // all off unless SAFEPOINT_DEBUG sets them
    /// if std::env::var_os("SAFEPOINT_DEBUG").is_none() {
    ///     assert_eq!(k, DebugKnobs::default());
    /// }
    /// ```
    pub fn from_env() -> DebugKnobs {
        DebugKnobs::from_vars(&DebugVars::from_env())
    }

    /// The knobs set in `spec` (`"gctrace=1,gccheckmark"`), without reporting anything.
    ///
    /// ```
    /// use safepoint_gc::DebugKnobs;
    /// let k = DebugKnobs::parse("gctrace,gcpoison=0,schedtrace=100");
    /// assert!(k.gctrace && !k.gcpoison); // the scheduler's keys are not the collector's
    /// ```
    pub fn parse(spec: &str) -> DebugKnobs {
        DebugKnobs::from_vars(&DebugVars::parse(spec))
    }

    fn from_vars(v: &DebugVars) -> DebugKnobs {
        let on = |k| v.flag(k) == Some(true);
        DebugKnobs {
            gctrace: on("gctrace"),
            gccheckmark: on("gccheckmark"),
            gcpoison: on("gcpoison"),
            gcstoptheworld: on("gcstoptheworld"),
        }
    }
}

/// Reads `SAFEPOINT_GC`, the collector's `gc_percent` from the environment (as Go reads
/// `GOGC`): a whole number of percent, or `off` for no triggered collection at all (forced
/// ones and the hard limit still collect). `None` if it is unset or malformed (a malformed
/// value is reported once through the message sink).
pub fn gc_percent_from_env() -> Option<u32> {
    let s = std::env::var("SAFEPOINT_GC").ok()?;
    let p = parse_gc_percent(&s);
    if p.is_none() {
        safepoint_sched::env::warn_once(&format!(
            "SAFEPOINT_GC={s:?} is not a whole number of percent or off; ignored"
        ));
    }
    p
}

/// Parses a `SAFEPOINT_GC` value (see [`gc_percent_from_env`]); `off` is `u32::MAX`.
pub fn parse_gc_percent(s: &str) -> Option<u32> {
    match s.trim() {
        "off" => Some(u32::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::DebugKnobs;

    #[test]
    fn knobs_parse_a_bare_key_is_on_and_unknown_or_malformed_entries_are_ignored() {
        let k = DebugKnobs::parse("gctrace=1, gccheckmark=1,asyncpreemptoff=1,gcpoison,x=2");
        assert!(k.gctrace && k.gccheckmark && k.gcpoison);
        assert!(!k.gcstoptheworld);
        let k = DebugKnobs::parse("gcstoptheworld=yes,gctrace=0");
        assert_eq!(k, DebugKnobs::default());
        let k = DebugKnobs::parse("gcpoison=1,gcstoptheworld=1,gcpoison=0");
        assert!(!k.gcpoison && k.gcstoptheworld);
        assert_eq!(DebugKnobs::parse(""), DebugKnobs::default());
    }

    #[test]
    fn gc_percent_parses_numbers_and_off() {
        use super::parse_gc_percent;
        assert_eq!(parse_gc_percent("50"), Some(50));
        assert_eq!(parse_gc_percent(" 400 "), Some(400));
        assert_eq!(parse_gc_percent("off"), Some(u32::MAX));
        assert_eq!(parse_gc_percent("-1"), None);
        assert_eq!(parse_gc_percent("lots"), None);
    }
}
