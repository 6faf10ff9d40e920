//! How the CLI talks to a person: colour only on a terminal (and never with `NO_COLOR` set), progress displays only
//! on a terminal, and plain text everywhere else so scripts and logs read the same every time.

use std::io::IsTerminal as _;
use std::time::Duration;

/// What a word says, for its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Dim,
}

/// Whether standard output gets colour: a terminal, and `NO_COLOR` unset or empty (<https://no-color.org>).
#[must_use]
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in its tone's colour when `on`.
#[must_use]
pub fn paint(text: &str, tone: Tone, on: bool) -> String {
    if !on || text.is_empty() {
        return text.to_owned();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Dim => "2",
    };
    format!("\u{1b}[{code}m{text}\u{1b}[0m")
}

/// The tone of a status word as Agora's tables print them, if it has one.
#[must_use]
pub fn tone_of(word: &str) -> Option<Tone> {
    match word {
        "Running" | "True" | "Succeeded" | "Finished" | "Ready" | "Healthy" | "Outstanding" | "created" => {
            Some(Tone::Good)
        }
        "Staging" | "Starting" | "Killing" | "Unknown" | "Unreachable" | "configured" | "Pending" | "Progressing" => {
            Some(Tone::Warn)
        }
        "Failed" | "False" | "Error" | "Lost" | "Gone" | "Killed" | "Dropped" | "Unhealthy" | "Warning" => {
            Some(Tone::Bad)
        }
        "unchanged" | "<none>" => Some(Tone::Dim),
        _ => None,
    }
}

/// Lines of cells as `kubectl get` prints them: each column as wide as its widest cell, three spaces apart, every
/// line after `indent`; with `colour`, status words are painted (after the widths are measured, so columns stay
/// aligned).
#[must_use]
pub fn aligned(lines: &[Vec<String>], indent: &str, colour: bool) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().filter_map(|l| l.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (row, line) in lines.iter().enumerate() {
        let mut text = String::from(indent);
        for (c, cell) in line.iter().enumerate() {
            let shown = match tone_of(cell) {
                Some(tone) if row > 0 => paint(cell, tone, colour),
                _ => cell.clone(),
            };
            text.push_str(&shown);
            if c + 1 < line.len() {
                text.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A progress display on standard error for a long wait: a spinner with a message on a terminal, nothing
/// otherwise (the caller prints the outcome either way).
#[must_use]
pub fn spinner(message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A progress bar of `total` steps on standard error (a terminal only).
#[must_use]
pub fn bar(total: u64, message: &str) -> indicatif::ProgressBar {
    progress(total, "{elapsed:>4} [{bar:30}] {pos}/{len} {msg}", message)
}

/// A progress bar of `total` bytes on standard error (a terminal only).
#[must_use]
pub fn bytes(total: u64, message: &str) -> indicatif::ProgressBar {
    progress(total, "{elapsed:>4} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}", message)
}

fn progress(total: u64, template: &str, message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_when_asked() {
        assert_eq!(paint("Running", Tone::Good, false), "Running");
        assert_eq!(paint("Failed", Tone::Bad, true), "\u{1b}[31mFailed\u{1b}[0m");
        assert_eq!(paint("", Tone::Bad, true), "", "an empty cell stays empty, so columns stay aligned");
        assert_eq!(tone_of("Running"), Some(Tone::Good));
        assert_eq!(tone_of("web"), None);
    }
}
