//! Errors with a source position.

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
    pub fn at(pos: Pos, msg: impl Into<String>) -> Error {
        Error { pos, msg: msg.into() }
    }

    /// The message as `file:line:col: msg`.
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
