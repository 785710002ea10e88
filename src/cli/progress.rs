//! The progress line of a long run, on stderr: clusters done of the total
//! and the tree level, redrawn in place. Shown only when stderr is a
//! terminal (and not with `--quiet`), so pipes, logs and CI output never
//! see it; a run shorter than a quarter second shows nothing.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::ops::progress::{Progress, Snapshot};

/// Draws a [`Progress`] until dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The line for one reading; `None` when there is nothing under way.
pub fn line(verb: &str, s: Snapshot) -> Option<String> {
    (s.total > 0 && s.done < s.total).then(|| {
        format!(
            "{verb}: {}/{} clusters, level {}/{}",
            s.done, s.total, s.level, s.levels
        )
    })
}

impl Ticker {
    /// A progress line for `progress`, or `None` when it must not be shown
    /// (`quiet`, or stderr is not a terminal).
    pub fn start(progress: &Arc<Progress>, verb: &'static str, quiet: bool) -> Option<Ticker> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (p, halt) = (progress.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(250));
            let mut shown = false;
            while !halt.load(Ordering::Relaxed) {
                let mut err = std::io::stderr().lock();
                match line(verb, p.snapshot()) {
                    Some(l) => {
                        let _ = write!(err, "\r\x1b[2K{l}");
                        shown = true;
                    }
                    None if shown => {
                        let _ = write!(err, "\r\x1b[2K");
                        shown = false;
                    }
                    None => {}
                }
                let _ = err.flush();
                drop(err);
                std::thread::sleep(Duration::from_millis(100));
            }
            if shown {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        });
        Some(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_clusters_done_and_the_level_and_goes_when_done() {
        let p = Progress::default();
        assert_eq!(line("applying", p.snapshot()), None);
        p.begin(3, 2);
        p.level(1);
        p.cluster_done();
        assert_eq!(
            line("applying", p.snapshot()).as_deref(),
            Some("applying: 1/3 clusters, level 1/2")
        );
        p.level(2);
        p.cluster_done();
        p.cluster_done();
        assert_eq!(line("applying", p.snapshot()), None);
    }
}
