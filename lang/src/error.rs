//! Errors with a source position.

#![forbid(unsafe_code)]

use std::fmt;

use crate::Pos;

/// A compile or runtime error: where, and what.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    /// Where in the source.
    pub pos: Pos,
    /// What went wrong.
    pub msg: String,
}

impl Error {
    /// An error at `pos`.
    /// ```
    /// use safepoint_lang::{Error, Pos};
    /// let e = Error::at(Pos { line: 3, col: 7 }, "unknown name x");
    /// assert_eq!(e.to_string(), "3:7: unknown name x");
    /// ```
    pub fn at(pos: Pos, msg: impl Into<String>) -> Error {
        Error { pos, msg: msg.into() }
    }

    /// The message as `file:line:col: msg`.
    /// ```
    /// use safepoint_lang::{Error, Pos};
    /// let e = Error::at(Pos { line: 3, col: 7 }, "unknown name x");
    /// assert_eq!(e.render("main.pb"), "main.pb:3:7: unknown name x");
    /// ```
    pub fn render(&self, file: &str) -> String {
        format!("{file}:{}:{}: {}", self.pos.line, self.pos.col, self.msg)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.msg)
    }
}

impl std::error::Error for Error {}
