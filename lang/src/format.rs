//! `format(f, args...)`: printf-style formatting, with Go's verbs.
//!
//! A verb is `%`, then flags (`-` left-justify, `+` always a sign, `0` pad with zeros, space:
//! a space for a plus sign), a width, a `.precision`, and one of:
//!
//! | verb | for | gives |
//! |---|---|---|
//! | `%v`, `%s` | anything | the value as `print` shows it (`%.3s`: at most 3 characters) |
//! | `%q` | a string | quoted, with escapes |
//! | `%d` | an integer | decimal |
//! | `%x`, `%X`, `%o`, `%b` | an integer | hex (lower, upper), octal, binary |
//! | `%c` | an integer | the character with that code point |
//! | `%f`, `%e`, `%g` | a number | fixed (6 decimals unless a precision says), exponent, shortest |
//! | `%t` | a bool | `true` or `false` |
//! | `%%` | nothing | `%` |
//!
//! A verb that does not fit its argument, a missing argument, an extra argument or an
//! unknown verb is an error naming it (Go writes `%!d(string=x)` into the output instead; a
//! runtime error is more use in a small language).

#![forbid(unsafe_code)]

/// One argument, as the interpreter hands it over.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// Anything else, as `print` shows it.
    Other(String),
}

impl Arg {
    fn shown(&self) -> String {
        match self {
            Arg::Int(v) => v.to_string(),
            Arg::Float(v) => show_float(*v),
            Arg::Str(s) | Arg::Other(s) => s.clone(),
            Arg::Bool(b) => b.to_string(),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Arg::Int(_) => "int",
            Arg::Float(_) => "float",
            Arg::Str(_) => "string",
            Arg::Bool(_) => "bool",
            Arg::Other(_) => "value",
        }
    }
}

/// How `print` shows a float: the shortest form that reads back the same, with `.0` added
/// to a finite one that would otherwise look like an integer.
/// ```
/// use safepoint_lang::format::show_float;
/// assert_eq!(show_float(2.0), "2.0");
/// assert_eq!(show_float(0.1), "0.1");
/// assert_eq!(show_float(f64::INFINITY), "inf");
/// ```
pub fn show_float(v: f64) -> String {
    let mut s = format!("{v}");
    if v.is_finite() && !s.contains(['.', 'e']) {
        s.push_str(".0");
    }
    s
}

/// Formats `args` by `f`.
///
/// # Errors
/// A description of the first verb that does not fit, or of a missing or extra argument.
///
/// ```
/// use safepoint_lang::format::{Arg, format};
/// let s = format("%s is %05d", &[Arg::Str("x".into()), Arg::Int(42)]);
/// assert_eq!(s.unwrap(), "x is 00042");
/// assert_eq!(format("%d", &[]).unwrap_err(), "format: %d has no argument");
/// ```
pub fn format(f: &str, args: &[Arg]) -> Result<String, String> {
    let mut out = String::new();
    let mut next = 0usize;
    let mut it = f.char_indices().peekable();
    while let Some((_, c)) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&(_, fl)) = it.peek() {
            match fl {
                '-' => left = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                _ => break,
            }
            it.next();
        }
        let mut width = 0usize;
        while let Some(&(_, d)) = it.peek().filter(|(_, d)| d.is_ascii_digit()) {
            width = width.saturating_mul(10).saturating_add(d as usize - '0' as usize);
            it.next();
        }
        let mut prec = None;
        if it.peek().is_some_and(|&(_, c)| c == '.') {
            it.next();
            let mut p = 0usize;
            while let Some(&(_, d)) = it.peek().filter(|(_, d)| d.is_ascii_digit()) {
                p = p.saturating_mul(10).saturating_add(d as usize - '0' as usize);
                it.next();
            }
            prec = Some(p.min(1000));
        }
        let Some((_, verb)) = it.next() else {
            return Err("format: the format ends inside a verb".into());
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            return Err(format!("format: %{verb} has no argument"));
        };
        next += 1;
        let bad = || format!("format: %{verb} of {} {}", arg.kind(), arg.shown());
        let sign = |neg: bool| {
            if neg {
                "-"
            } else if plus {
                "+"
            } else if space {
                " "
            } else {
                ""
            }
        };
        // The sign and the digits, kept apart so that zero padding goes between them.
        let (pre, body): (&str, String) = match (verb, arg) {
            ('v' | 's', a) => {
                let s = a.shown();
                (
                    "",
                    match prec {
                        Some(p) => s.chars().take(p).collect(),
                        None => s,
                    },
                )
            }
            ('q', Arg::Str(s)) => ("", format!("{s:?}")),
            ('t', Arg::Bool(b)) => ("", b.to_string()),
            ('d', Arg::Int(v)) => (sign(*v < 0), v.unsigned_abs().to_string()),
            ('x', Arg::Int(v)) => (sign(*v < 0), format!("{:x}", v.unsigned_abs())),
            ('X', Arg::Int(v)) => (sign(*v < 0), format!("{:X}", v.unsigned_abs())),
            ('o', Arg::Int(v)) => (sign(*v < 0), format!("{:o}", v.unsigned_abs())),
            ('b', Arg::Int(v)) => (sign(*v < 0), format!("{:b}", v.unsigned_abs())),
            ('c', Arg::Int(v)) => {
                let c = u32::try_from(*v).ok().and_then(char::from_u32).ok_or_else(bad)?;
                ("", c.to_string())
            }
            ('f' | 'e' | 'g', Arg::Int(_) | Arg::Float(_)) => {
                let x = match arg {
                    Arg::Int(v) => *v as f64,
                    Arg::Float(v) => *v,
                    _ => unreachable!("matched above"),
                };
                let neg = x.is_sign_negative() && !x.is_nan();
                let a = x.abs();
                let digits = match verb {
                    'f' => format!("{a:.*}", prec.unwrap_or(6)),
                    'e' => go_exponent(&format!("{a:.*e}", prec.unwrap_or(6))),
                    _ => match prec {
                        Some(p) => shortest_g(a, p.max(1)),
                        None => show_float(a).trim_end_matches(".0").to_string(),
                    },
                };
                (sign(neg), digits)
            }
            _ => return Err(bad()),
        };
        let len = pre.chars().count() + body.chars().count();
        let pad = width.saturating_sub(len);
        let numeric = matches!(verb, 'd' | 'x' | 'X' | 'o' | 'b' | 'f' | 'e' | 'g');
        if left {
            out.push_str(pre);
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && numeric {
            out.push_str(pre);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(&body);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(pre);
            out.push_str(&body);
        }
    }
    if next < args.len() {
        return Err(format!("format: {} arguments but {} verbs", args.len(), next));
    }
    Ok(out)
}

/// Rust writes `1.5e3`; Go writes `1.5e+03`: a sign and at least two digits.
fn go_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s.to_string(),
    }
}

/// `%.Ng`: `p` significant digits, in exponent form when the exponent is below -4 or at least
/// `p` (as C and Go do), trailing zeros dropped.
fn shortest_g(a: f64, p: usize) -> String {
    if a == 0.0 || !a.is_finite() {
        return format!("{a}");
    }
    let exp = a.log10().floor() as i64;
    let trim = |s: String| {
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
    };
    if exp < -4 || exp >= p as i64 {
        let s = format!("{a:.*e}", p - 1);
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        go_exponent(&format!("{}e{e}", trim(m.to_string())))
    } else {
        trim(format!("{a:.*}", (p as i64 - 1 - exp).max(0) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(fmt: &str, args: &[Arg]) -> String {
        format(fmt, args).unwrap()
    }

    #[test]
    fn the_usual_verbs_give_what_go_gives() {
        use Arg::*;
        assert_eq!(f("%.9f", &[Float(std::f64::consts::PI)]), "3.141592654");
        assert_eq!(
            f("%d|%5d|%-5d|%05d|%+d", &[Int(42), Int(42), Int(42), Int(-42), Int(7)]),
            "42|   42|42   |-0042|+7"
        );
        assert_eq!(
            f("%x %X %o %b %c", &[Int(255), Int(255), Int(8), Int(5), Int(65)]),
            "ff FF 10 101 A"
        );
        assert_eq!(
            f("%s and %v, %q", &[Str("a".into()), Int(3), Str("h\"i".into())]),
            "a and 3, \"h\\\"i\""
        );
        assert_eq!(f("%e %.2e", &[Float(1234.5), Float(0.000123)]), "1.234500e+03 1.23e-04");
        assert_eq!(
            f("%g %g %.3g %g", &[Float(100000.0), Float(0.5), Float(1234.5), Int(3)]),
            "100000 0.5 1.23e+03 3"
        );
        assert_eq!(
            f("%f %8.3f|%-8.2f|", &[Int(2), Float(-1.5), Float(2.25)]),
            "2.000000   -1.500|2.25    |"
        );
        assert_eq!(f("%t %% %.2s", &[Bool(true), Str("hello".into())]), "true % he");
        assert_eq!(f("[%6s]", &[Other("[1, 2]".into())]), "[[1, 2]]");
    }

    #[test]
    fn a_verb_that_does_not_fit_or_a_count_that_differs_is_an_error() {
        use Arg::*;
        assert_eq!(format("%d", &[Str("x".into())]).unwrap_err(), "format: %d of string x");
        assert_eq!(format("%d %d", &[Int(1)]).unwrap_err(), "format: %d has no argument");
        assert_eq!(format("%d", &[Int(1), Int(2)]).unwrap_err(), "format: 2 arguments but 1 verbs");
        assert_eq!(format("%y", &[Int(1)]).unwrap_err(), "format: %y of int 1");
        assert!(format("50%", &[]).is_err());
        assert!(format("%c", &[Int(-1)]).is_err());
    }
}
