//! The runner's output: one line per block (`ok`, `not ok`, `skip`), the reasons of a failure
//! indented under it, and the closing count.

use std::fmt::Write as _;

/// What happened to one block.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(Vec<String>),
    Skip(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    pub fn closing_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// A file's lines, collected so that files run in parallel print whole.
#[derive(Debug, Default)]
pub struct FileReport {
    pub text: String,
    pub summary: Summary,
}

impl FileReport {
    pub fn block(&mut self, file: &str, seq: usize, name: &str, outcome: &Outcome) {
        let title = name.split_once(':').map(|(_, t)| t.trim()).unwrap_or(name);
        let label = format!("{file} TEST {seq}: {title}");
        match outcome {
            Outcome::Pass => {
                self.summary.passed += 1;
                let _ = writeln!(self.text, "ok - {label}");
            }
            Outcome::Skip(reason) => {
                self.summary.skipped += 1;
                let _ = writeln!(self.text, "skip - {label} # {reason}");
            }
            Outcome::Fail(reasons) => {
                self.summary.failed += 1;
                let _ = writeln!(self.text, "not ok - {label}");
                for r in reasons {
                    for line in r.lines() {
                        let _ = writeln!(self.text, "    {line}");
                    }
                }
            }
        }
    }

    /// A problem with the whole file (the prologue failed, the gateway did not start).
    pub fn file_error(&mut self, file: &str, msg: &str) {
        self.summary.failed += 1;
        let _ = writeln!(self.text, "not ok - {file}: {msg}");
    }

    pub fn note(&mut self, msg: &str) {
        let _ = writeln!(self.text, "# {msg}");
    }
}
