//! The command line's edge: clap types (`args`), one function per command
//! over [`crate::ops`] (`commands`), exit codes and error messages
//! (`exit`), the progress line of long runs (`progress`), and the printers of every command's text, Markdown and JSON
//! (`output`). `main.rs` parses and calls [`commands::run`].

pub mod args;
pub mod commands;
pub mod exit;
pub mod joining;
pub mod output;
pub mod progress;
pub mod review;
