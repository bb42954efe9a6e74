//! The lexer: source text to tokens, each with its line and column.

#![forbid(unsafe_code)]

use crate::Pos;
use crate::error::Error;

/// A token's kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal (escapes decoded).
    Str(String),
    /// A name.
    Name(String),
    /// A keyword or punctuation, as written.
    Sym(&'static str),
    /// The end of the input.
    Eof,
}

/// A token and where it starts.
#[derive(Clone, Debug)]
pub struct Token {
    /// What it is.
    pub tok: Tok,
    /// Where it starts.
    pub pos: Pos,
}

const KEYWORDS: &[&str] = &[
    "fn", "let", "if", "else", "while", "for", "in", "return", "break", "continue", "go", "select",
    "case", "default", "true", "false", "nil", "and", "or", "not", "try", "catch",
];

// Longest first, so that "<-" and "<<" win over "<" and "..", "==" over ".", "=".
const SYMBOLS: &[&str] = &[
    "<-", "<<", ">>", "..", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "<", ">", "=", "&",
    "|", "^", "(", ")", "{", "}", "[", "]", ",", ":", ".", ";", "!",
];

/// Splits `src` into tokens; the last is [`Tok::Eof`].
///
/// # Errors
/// An unknown character, an unterminated string, a bad escape, or a number out of range.
///
/// ```
/// use safepoint_lang::lexer::{Tok, lex};
/// let toks = lex("x = 1.5").unwrap();
/// assert_eq!(toks.len(), 4); // x, =, 1.5 and the end
/// assert!(matches!(toks[2].tok, Tok::Float(f) if f == 1.5));
/// assert!(matches!(toks[3].tok, Tok::Eof));
/// let e = lex("x = \"open").unwrap_err();
/// assert_eq!(e.pos.line, 1);
/// ```
pub fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let b = src.as_bytes();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let pos = Pos { line, col };
        if c == b'\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            col += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
            let mut float = i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit();
            if float {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            // An exponent: `1e9`, `2.5e-3`, `6E+23`.
            let digit_at = |k: usize| b.get(k).is_some_and(u8::is_ascii_digit);
            if matches!(b.get(i), Some(b'e' | b'E'))
                && (digit_at(i + 1)
                    || (matches!(b.get(i + 1), Some(b'+' | b'-')) && digit_at(i + 2)))
            {
                float = true;
                i += 2;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = src[start..i].chars().filter(|&c| c != '_').collect();
            if float {
                Tok::Float(text.parse().map_err(|_| Error::at(pos, "bad float literal"))?)
            } else {
                match text.parse::<i64>() {
                    Ok(v) if crate::value::int_fits(v) => Tok::Int(v),
                    _ => {
                        return Err(Error::at(pos, format!("integer literal {text} out of range")));
                    }
                }
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let w = &src[start..i];
            match KEYWORDS.iter().find(|k| **k == w) {
                Some(k) => Tok::Sym(k),
                None => Tok::Name(w.to_owned()),
            }
        } else if c == b'"' {
            i += 1;
            let mut s = Vec::new();
            loop {
                match b.get(i) {
                    None | Some(b'\n') => return Err(Error::at(pos, "unterminated string")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let e = match b.get(i + 1) {
                            Some(b'n') => b'\n',
                            Some(b't') => b'\t',
                            Some(b'\\') => b'\\',
                            Some(b'"') => b'"',
                            Some(b'0') => 0,
                            _ => {
                                let p = Pos { line, col: col + (i - start) as u32 };
                                return Err(Error::at(p, "unknown escape in string"));
                            }
                        };
                        s.push(e);
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            Tok::Str(String::from_utf8(s).map_err(|_| Error::at(pos, "string is not UTF-8"))?)
        } else {
            match SYMBOLS.iter().find(|s| b[i..].starts_with(s.as_bytes())) {
                Some(s) => {
                    i += s.len();
                    Tok::Sym(s)
                }
                None => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(Error::at(pos, format!("unexpected character {ch:?}")));
                }
            }
        };
        col += src[start..i].chars().count() as u32;
        out.push(Token { tok, pos });
    }
    out.push(Token { tok: Tok::Eof, pos: Pos { line, col } });
    Ok(out)
}
