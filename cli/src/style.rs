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

/// Text from the cluster as one line a terminal shows as written: control characters (a newline, a carriage
/// return, ESC, C1 controls) and bidirectional overrides are escaped (`\n`, `\u{1b}`), so a message cannot forge
/// lines, move the cursor or recolour the screen.
#[must_use]
pub fn escaped(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A byte stream (a task's log) as text a terminal shows as written: lines and tabs kept, other control characters
/// [`escaped`]. A character split between two chunks is held back until its end arrives.
#[derive(Debug, Default)]
pub struct TerminalText {
    pending: Vec<u8>,
}

impl TerminalText {
    /// The text of `chunk` that is complete so far.
    pub fn feed(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest = &self.pending[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    push_shown(&mut out, text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    push_shown(&mut out, std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete at the end: wait for the rest of the character.
                        None => {
                            rest = bad;
                            break;
                        }
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[len..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

fn push_shown(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if needs_escape(c) => out.push_str(&escaped(c.encode_utf8(&mut [0; 4]))),
            c => out.push(c),
        }
    }
}

/// Control characters, and the Unicode marks that reorder what follows them.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A line without its ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \\`, two-byte `ESC x`)
/// or other control characters: what a log written for a terminal says, as plain text.
#[must_use]
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else if c == '\t' {
            out.push(' ');
        } else if !needs_escape(c) {
            out.push(c);
        }
    }
    out
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
/// aligned). Cells are [`escaped`]: what the cluster says cannot drive the terminal.
#[must_use]
pub fn aligned(lines: &[Vec<String>], indent: &str, colour: bool) -> String {
    let lines: Vec<Vec<String>> = lines.iter().map(|l| l.iter().map(|cell| escaped(cell)).collect()).collect();
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

    #[test]
    fn text_from_the_cluster_cannot_drive_the_terminal() {
        assert_eq!(escaped("plain words, ünïcode"), "plain words, ünïcode");
        assert_eq!(escaped("ok\r\nWarning   forged line"), "ok\\r\\nWarning   forged line");
        assert_eq!(escaped("\u{1b}[2J\u{1b}]0;title\u{7}"), "\\u{1b}[2J\\u{1b}]0;title\\u{7}");
        assert_eq!(escaped("a\u{202e}b\u{9b}"), "a\\u{202e}b\\u{9b}");
        assert_eq!(plain("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x\ty\r"), "2026  INFO x y");
        assert_eq!(plain("\u{1b}]0;title\u{7}after \u{1b}]8;;u\u{1b}\\link"), "after link");
        let mut shown = TerminalText::default();
        let bytes = "é\u{1b}[31mred\r\n\tnext\n".as_bytes();
        let mut out = shown.feed(&bytes[..1]);
        assert_eq!(out, "", "half a character waits");
        out.push_str(&shown.feed(&bytes[1..]));
        assert_eq!(out, "é\\u{1b}[31mred\\r\n\tnext\n");
        assert_eq!(shown.feed(b"\xff!"), "\u{fffd}!");
    }
}
