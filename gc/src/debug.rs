//! The `SAFEPOINT_DEBUG` environment variable: comma-separated `key=value` debugging knobs.

/// The collector's debugging knobs, as read from `SAFEPOINT_DEBUG`.
///
/// Keys (value `1` turns a knob on, `0` off): `gctrace` (one line per cycle on stderr),
/// `gccheckmark` (verify every marking by re-marking from scratch), `gcpoison` (fill freed
/// objects with a pattern and catch reads and writes of freed objects), `gcstoptheworld`
/// (mark with the world stopped). Unknown keys are ignored (other parts of the runtime read
/// the same variable), and so are malformed entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// The knobs set in `SAFEPOINT_DEBUG` (all off if it is unset).
    pub fn from_env() -> DebugKnobs {
        std::env::var("SAFEPOINT_DEBUG").map(|s| DebugKnobs::parse(&s)).unwrap_or_default()
    }

    /// The knobs set in `spec` (`"gctrace=1,gccheckmark=1"`).
    pub fn parse(spec: &str) -> DebugKnobs {
        let mut k = DebugKnobs::default();
        for item in spec.split(',') {
            let Some((key, value)) = item.trim().split_once('=') else { continue };
            let on = match value.trim() {
                "1" => true,
                "0" => false,
                _ => continue,
            };
            match key.trim() {
                "gctrace" => k.gctrace = on,
                "gccheckmark" => k.gccheckmark = on,
                "gcpoison" => k.gcpoison = on,
                "gcstoptheworld" => k.gcstoptheworld = on,
                _ => {}
            }
        }
        k
    }
}

/// Reads `SAFEPOINT_GC`, the collector's `gc_percent` from the environment (as Go reads
/// `GOGC`): a whole number of percent, or `off` for no triggered collection at all (forced
/// ones and the hard limit still collect). `None` if it is unset or malformed.
pub fn gc_percent_from_env() -> Option<u32> {
    std::env::var("SAFEPOINT_GC").ok().and_then(|s| parse_gc_percent(&s))
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
    fn knobs_parse_and_unknown_or_malformed_entries_are_ignored() {
        let k = DebugKnobs::parse("gctrace=1, gccheckmark=1,asyncpreemptoff=1,gcpoison,x=2");
        assert!(k.gctrace && k.gccheckmark);
        assert!(!k.gcpoison && !k.gcstoptheworld);
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
