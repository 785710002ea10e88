//! The command line's edge: clap types (`args`) and the printers of every
//! command's text, Markdown and JSON (`output`). `main.rs` parses, calls one
//! operation of [`crate::ops`], prints and maps the exit code.

pub mod args;
pub mod output;
