//! ISO 8601 repeating intervals, as Chronos schedules use them: `R[n]/<start>/<period>`.
//!
//! - `R` repeats forever, `Rn` gives n runs, `R0` none; an empty start means "now" (the caller says when that is).
//! - The period is a duration `PnYnMnDTnHnMnS` (only the last unit may have a fraction) or `PnW`.
//! - Calendar units (years, months, weeks, days) follow the wall clock of the schedule's IANA time zone; time units
//!   (hours, minutes, seconds) are exact. So `P1D` stays at 02:00 local across a DST change while `PT24H` shifts.
//! - Run k is `start + k × period`, always computed from the start: monthly from Jan 31 gives Feb 28 (or 29), Mar 31,
//!   Apr 30 — never drifting to the 28th. A wall-clock time that does not exist (a DST gap) runs at the first time
//!   after the gap; one that exists twice (DST fold) runs once, at the earlier.

use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

/// What is wrong with a schedule, naming the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not three `/`-separated parts (or two, without a start).
    #[error(
        "\"{0}\" is not a repeating interval: expected R[n]/<start>/<period>, e.g. \"R/2026-01-01T00:00:00Z/PT1H\""
    )]
    Shape(String),
    /// The repetition part is not `R` or `Rn`.
    #[error("repetitions \"{0}\": expected \"R\" (forever) or \"R\" followed by a count, e.g. \"R5\"")]
    Repetitions(String),
    /// The start is not an ISO 8601 date-time.
    #[error(
        "start \"{0}\": not an ISO 8601 date-time, e.g. \"2026-01-01T09:00:00Z\" or \"2026-01-01T09:00:00\" (in the schedule's time zone)"
    )]
    Start(String),
    /// The period is not a valid duration.
    #[error("period \"{text}\": {reason}")]
    Period {
        /// The period as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not an IANA name known to Agora.
    #[error("time zone \"{0}\": not a known IANA time zone name, e.g. \"Europe/Berlin\" or \"UTC\"")]
    TimeZone(String),
}

/// How often a schedule repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repetitions {
    /// `R`: forever.
    Forever,
    /// `Rn`: n runs in all (`R0`: none).
    Times(u64),
}

/// An ISO 8601 duration, kept as written (calendar units are not converted to seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IsoDuration {
    /// `nY`.
    pub years: i64,
    /// `nM` before `T`.
    pub months: i64,
    /// `nW`.
    pub weeks: i64,
    /// `nD`.
    pub days: i64,
    /// `nH`.
    pub hours: i64,
    /// `nM` after `T`.
    pub minutes: i64,
    /// `nS`, whole part.
    pub seconds: i64,
    /// `nS`, fraction in nanoseconds.
    pub nanoseconds: i64,
}

impl IsoDuration {
    /// True when every component is zero.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// True when the duration has no calendar units, so it is a fixed number of seconds.
    #[must_use]
    pub fn is_exact(&self) -> bool {
        self.years == 0 && self.months == 0 && self.weeks == 0 && self.days == 0
    }

    /// The duration as a jiff span.
    ///
    /// # Errors
    /// A component is out of jiff's range.
    pub fn to_span(&self) -> Result<Span, jiff::Error> {
        Span::new()
            .try_years(self.years)?
            .try_months(self.months)?
            .try_weeks(self.weeks)?
            .try_days(self.days)?
            .try_hours(self.hours)?
            .try_minutes(self.minutes)?
            .try_seconds(self.seconds)?
            .try_nanoseconds(self.nanoseconds)
    }

    /// The exact length in seconds (as a float) when [`is_exact`](Self::is_exact).
    #[must_use]
    pub fn exact_seconds(&self) -> Option<f64> {
        self.is_exact()
            .then(|| (self.hours * 3600 + self.minutes * 60 + self.seconds) as f64 + self.nanoseconds as f64 / 1e9)
    }
}

impl FromStr for IsoDuration {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration(text)
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("PT0S");
        }
        f.write_str("P")?;
        for (n, unit) in [(self.years, 'Y'), (self.months, 'M'), (self.weeks, 'W'), (self.days, 'D')] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        if self.hours != 0 || self.minutes != 0 || self.seconds != 0 || self.nanoseconds != 0 {
            f.write_str("T")?;
            for (n, unit) in [(self.hours, 'H'), (self.minutes, 'M')] {
                if n != 0 {
                    write!(f, "{n}{unit}")?;
                }
            }
            match (self.seconds, self.nanoseconds) {
                (0, 0) => {}
                (s, 0) => write!(f, "{s}S")?,
                (s, ns) => write!(f, "{s}.{}S", format!("{ns:09}").trim_end_matches('0'))?,
            }
        }
        Ok(())
    }
}

/// Parses an ISO 8601 duration: `PnYnMnDTnHnMnS` or `PnW`. Only seconds may be fractional (ISO allows a fraction on
/// the last component, but a fractional month or day has no single meaning in calendar arithmetic).
///
/// # Errors
/// [`ScheduleError::Period`] saying which part is wrong.
pub fn parse_duration(text: &str) -> Result<IsoDuration, ScheduleError> {
    let bad = |reason: String| ScheduleError::Period { text: text.to_owned(), reason };
    let Some(body) = text.strip_prefix('P') else {
        return Err(bad("a duration starts with 'P', e.g. \"PT1H\" or \"P1D\"".to_owned()));
    };
    if body.is_empty() {
        return Err(bad("no units after 'P': add some, e.g. \"P1D\" or \"PT30M\"".to_owned()));
    }
    // Designators in the order ISO 8601 requires them; `rank` enforces it.
    const DATE_UNITS: [char; 4] = ['Y', 'M', 'W', 'D'];
    const TIME_UNITS: [char; 3] = ['H', 'M', 'S'];
    let mut duration = IsoDuration::default();
    let mut in_time = false;
    let mut saw_time_unit = false;
    let mut last_rank: Option<usize> = None;
    let mut number = String::new();
    for c in body.chars() {
        match c {
            '0'..='9' => number.push(c),
            '.' | ',' => {
                number.push('.');
            }
            'T' => {
                if in_time {
                    return Err(bad("'T' appears twice".to_owned()));
                }
                if !number.is_empty() {
                    return Err(bad(format!("\"{number}\" before 'T' has no unit")));
                }
                in_time = true;
            }
            unit if unit.is_ascii_alphabetic() => {
                let units: &[char] = if in_time { &TIME_UNITS } else { &DATE_UNITS };
                let Some(index) = units.iter().position(|u| *u == unit) else {
                    let section = if in_time { "after 'T' use H, M or S" } else { "before 'T' use Y, M, W or D" };
                    return Err(bad(format!("unknown unit '{unit}': {section}")));
                };
                let rank = index + if in_time { DATE_UNITS.len() } else { 0 };
                if number.is_empty() {
                    return Err(bad(format!("missing a number before '{unit}'")));
                }
                if last_rank.is_some_and(|last| last >= rank) {
                    return Err(bad(format!(
                        "'{unit}' is out of order or repeated: write Y, M, W, D, then T, H, M, S"
                    )));
                }
                last_rank = Some(rank);
                let (whole, fraction) = match number.split_once('.') {
                    Some((w, f)) => (w, Some(f)),
                    None => (number.as_str(), None),
                };
                if whole.is_empty() || fraction.is_some_and(|f| f.is_empty() || f.contains('.')) {
                    return Err(bad(format!("\"{number}\" before '{unit}' is not a number")));
                }
                let value: i64 = whole.parse().map_err(|_| bad(format!("{whole}{unit} is too large")))?;
                if let Some(fraction) = fraction {
                    if !(in_time && unit == 'S') {
                        return Err(bad(format!("only seconds may have a fraction, not '{unit}'")));
                    }
                    let digits = &fraction[..fraction.len().min(9)];
                    let scale = 10_i64.pow(u32::try_from(9 - digits.len()).unwrap_or(0));
                    duration.nanoseconds = digits.parse::<i64>().unwrap_or(0) * scale;
                }
                match (in_time, unit) {
                    (false, 'Y') => duration.years = value,
                    (false, 'M') => duration.months = value,
                    (false, 'W') => duration.weeks = value,
                    (false, 'D') => duration.days = value,
                    (true, 'H') => duration.hours = value,
                    (true, 'M') => duration.minutes = value,
                    _ => duration.seconds = value,
                }
                if in_time {
                    saw_time_unit = true;
                }
                number.clear();
            }
            other => return Err(bad(format!("unexpected character '{other}'"))),
        }
    }
    if !number.is_empty() {
        return Err(bad(format!("\"{number}\" at the end has no unit (add Y, M, W, D, H, M or S)")));
    }
    if in_time && !saw_time_unit {
        return Err(bad("'T' must be followed by hours, minutes or seconds, e.g. \"PT1H\"".to_owned()));
    }
    if duration.weeks != 0 && duration != (IsoDuration { weeks: duration.weeks, ..IsoDuration::default() }) {
        return Err(bad("weeks (W) cannot be combined with other units: write days instead, e.g. \"P10D\"".to_owned()));
    }
    duration.to_span().map_err(|e| bad(format!("out of range: {e}")))?;
    Ok(duration)
}

/// Looks up an IANA time zone; `None` or empty means UTC.
///
/// # Errors
/// [`ScheduleError::TimeZone`] for an unknown name.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name {
        None | Some("") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.to_owned())),
    }
}

/// A parsed `R[n]/<start>/<period>` whose start may still be "now".
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleExpr {
    /// `R` or `Rn`.
    pub repetitions: Repetitions,
    /// The start as written: a moment, a wall-clock time in the schedule's zone, or `None` for "now".
    pub start: Option<Start>,
    /// The period.
    pub period: IsoDuration,
}

/// The start of a schedule as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// With an offset or `Z`: a moment.
    Instant(Timestamp),
    /// Without: a wall-clock time in the schedule's time zone.
    Civil(DateTime),
}

impl ScheduleExpr {
    /// Parses `R[n]/<start>/<period>` (or `R[n]/<period>`, with no start).
    ///
    /// # Errors
    /// A [`ScheduleError`] naming the bad part.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let parts: Vec<&str> = text.split('/').collect();
        let (reps, start, period) = match parts.as_slice() {
            [reps, start, period] => (*reps, *start, *period),
            [reps, period] if period.starts_with('P') => (*reps, "", *period),
            _ => return Err(ScheduleError::Shape(text.to_owned())),
        };
        let repetitions = match reps.strip_prefix('R') {
            Some("") => Repetitions::Forever,
            Some(n) if n.chars().all(|c| c.is_ascii_digit()) => {
                Repetitions::Times(n.parse().map_err(|_| ScheduleError::Repetitions(reps.to_owned()))?)
            }
            _ => return Err(ScheduleError::Repetitions(reps.to_owned())),
        };
        let start = match start {
            "" => None,
            s => Some(parse_start(s)?),
        };
        let period = parse_duration(period)?;
        if period.is_zero() {
            return Err(ScheduleError::Period {
                text: period.to_string(),
                reason: "the period must be longer than zero".to_owned(),
            });
        }
        Ok(Self { repetitions, start, period })
    }

    /// Fixes the start in a time zone; an empty start becomes `now`.
    ///
    /// # Errors
    /// The period cannot be represented (it was checked at parse time, so only for extreme values).
    pub fn resolve(&self, tz: TimeZone, now: Timestamp) -> Result<Schedule, ScheduleError> {
        let start = match &self.start {
            None => now.to_zoned(tz),
            Some(Start::Instant(t)) => t.to_zoned(tz),
            Some(Start::Civil(dt)) => dt.to_zoned(tz).map_err(|_| ScheduleError::Start(dt.to_string()))?,
        };
        let period = self.period.to_span().map_err(|e| ScheduleError::Period {
            text: self.period.to_string(),
            reason: format!("out of range: {e}"),
        })?;
        Ok(Schedule { repetitions: self.repetitions, start, period, exact: self.period.exact_seconds() })
    }
}

fn parse_start(text: &str) -> Result<Start, ScheduleError> {
    if let Ok(t) = Timestamp::from_str(text) {
        return Ok(Start::Instant(t));
    }
    if text.contains('T')
        && let Ok(dt) = DateTime::from_str(text)
    {
        return Ok(Start::Civil(dt));
    }
    Err(ScheduleError::Start(text.to_owned()))
}

/// A schedule with a fixed start in a time zone: the instants `start + k × period` for `k` in `0..n`.
#[derive(Clone, Debug)]
pub struct Schedule {
    repetitions: Repetitions,
    start: Zoned,
    period: Span,
    /// The period in seconds when it has no calendar units (lets `next_after` jump straight to the answer).
    exact: Option<f64>,
}

impl Schedule {
    /// Parses `expr` in the time zone `tz` (IANA name, UTC when `None`), with an empty start meaning `now`.
    ///
    /// # Errors
    /// A [`ScheduleError`] naming the bad part.
    pub fn parse(expr: &str, tz: Option<&str>, now: Timestamp) -> Result<Self, ScheduleError> {
        ScheduleExpr::parse(expr)?.resolve(time_zone(tz)?, now)
    }

    /// How often it repeats.
    #[must_use]
    pub fn repetitions(&self) -> Repetitions {
        self.repetitions
    }

    /// The first instant (even for `R0`, which has no runs).
    #[must_use]
    pub fn start(&self) -> &Zoned {
        &self.start
    }

    /// Instant number `k` (0-based), or `None` past the last repetition or the representable range.
    #[must_use]
    pub fn instant(&self, k: u64) -> Option<Timestamp> {
        if let Repetitions::Times(n) = self.repetitions
            && k >= n
        {
            return None;
        }
        let k = i64::try_from(k).ok()?;
        let span = self.period.checked_mul(k).ok()?;
        self.start.checked_add(span).ok().map(|z| z.timestamp())
    }

    /// The index of the first instant strictly after `t` (it may not exist, see [`instant`](Self::instant)).
    fn first_index_after(&self, t: Timestamp) -> u64 {
        if t < self.start.timestamp() {
            return 0;
        }
        // Exact periods: jump near the answer, then settle by comparison (float rounding may be off by one).
        let mut lo: u64 = 0;
        if let Some(seconds) = self.exact {
            let elapsed = t.duration_since(self.start.timestamp()).as_secs_f64();
            let guess = (elapsed / seconds).floor().max(0.0) as u64;
            lo = guess.saturating_sub(1);
            if self.unbounded_instant(lo).is_none_or(|x| x > t) {
                lo = 0;
            }
        }
        // Invariant: unbounded_instant(lo) <= t (true for lo = 0 since start <= t). Gallop to an upper bound,
        // then bisect. Instants strictly increase with k, so the search is exact.
        let mut step: u64 = 1;
        let mut hi = lo.saturating_add(step);
        while self.unbounded_instant(hi).is_some_and(|x| x <= t) {
            lo = hi;
            step = step.saturating_mul(2);
            hi = lo.saturating_add(step);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.unbounded_instant(mid).is_some_and(|x| x <= t) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// Instant `k` ignoring the repetition count (`None` only past the representable range).
    fn unbounded_instant(&self, k: u64) -> Option<Timestamp> {
        let k = i64::try_from(k).ok()?;
        self.start.checked_add(self.period.checked_mul(k).ok()?).ok().map(|z| z.timestamp())
    }

    /// The first instant strictly after `t`, or `None` when the repetitions are used up.
    #[must_use]
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.instant(self.first_index_after(t))
    }

    /// The instants in `(after, until]`, in order.
    #[must_use]
    pub fn between(&self, after: Timestamp, until: Timestamp) -> Instants<'_> {
        Instants { schedule: self, k: self.first_index_after(after), until }
    }

    /// How many instants lie in `(after, until]`, counted without visiting them (a per-second schedule after a
    /// year's downtime is one subtraction, not 31 million steps).
    #[must_use]
    pub fn count_between(&self, after: Timestamp, until: Timestamp) -> u64 {
        if until <= after {
            return 0;
        }
        let mut from = self.first_index_after(after);
        let mut to = self.first_index_after(until);
        if let Repetitions::Times(n) = self.repetitions {
            from = from.min(n);
            to = to.min(n);
        }
        to.saturating_sub(from)
    }

    /// The latest instant at or before `t`, if any has come.
    #[must_use]
    pub fn latest_until(&self, t: Timestamp) -> Option<Timestamp> {
        let mut index = self.first_index_after(t);
        if let Repetitions::Times(n) = self.repetitions {
            index = index.min(n);
        }
        self.instant(index.checked_sub(1)?)
    }

    /// How many runs are left after `t` (`None` for `R`).
    #[must_use]
    pub fn remaining_after(&self, t: Timestamp) -> Option<u64> {
        match self.repetitions {
            Repetitions::Forever => None,
            Repetitions::Times(n) => Some(n.saturating_sub(self.first_index_after(t))),
        }
    }
}

/// The instants of a schedule in a window; see [`Schedule::between`].
#[derive(Debug)]
pub struct Instants<'a> {
    schedule: &'a Schedule,
    k: u64,
    until: Timestamp,
}

impl Iterator for Instants<'_> {
    type Item = Timestamp;

    fn next(&mut self) -> Option<Timestamp> {
        let t = self.schedule.instant(self.k).filter(|t| *t <= self.until)?;
        self.k += 1;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn schedule(expr: &str, tz: Option<&str>) -> Schedule {
        Schedule::parse(expr, tz, ts("2000-01-01T00:00:00Z")).unwrap()
    }

    fn all(s: &Schedule, after: &str, until: &str) -> Vec<String> {
        s.between(ts(after), ts(until)).map(|t| t.to_string()).collect()
    }

    #[test]
    fn durations_parse_every_unit() {
        let d = parse_duration("P1Y2M3DT4H5M6.5S").unwrap();
        assert_eq!(
            d,
            IsoDuration {
                years: 1,
                months: 2,
                days: 3,
                hours: 4,
                minutes: 5,
                seconds: 6,
                nanoseconds: 500_000_000,
                ..IsoDuration::default()
            }
        );
        assert_eq!(parse_duration("P2W").unwrap().weeks, 2);
        assert_eq!(parse_duration("PT10M").unwrap().minutes, 10);
        assert_eq!(parse_duration("P10M").unwrap().months, 10);
        assert_eq!(parse_duration("PT0,25S").unwrap().nanoseconds, 250_000_000);
        assert_eq!(parse_duration("P1Y2M3DT4H5M6.5S").unwrap().to_string(), "P1Y2M3DT4H5M6.5S");
    }

    #[test]
    fn malformed_durations_name_the_bad_part() {
        let cases = [
            ("1H", "starts with 'P'"),
            ("P", "no units after 'P'"),
            ("PT", "'T' must be followed by hours, minutes or seconds"),
            ("P1H", "unknown unit 'H': before 'T' use Y, M, W or D"),
            ("PT1D", "unknown unit 'D': after 'T' use H, M or S"),
            ("PTH", "missing a number before 'H'"),
            ("PT1M1H", "'H' is out of order or repeated"),
            ("P1D1D", "'D' is out of order or repeated"),
            ("P1W2D", "weeks (W) cannot be combined"),
            ("P1.5M", "only seconds may have a fraction, not 'M'"),
            ("PT1.5S2S", "'S' is out of order or repeated"),
            ("PT5", "\"5\" at the end has no unit"),
            ("PT1H!", "unexpected character '!'"),
            ("P99999999999999999999Y", "is too large"),
            ("P30000Y", "out of range"),
        ];
        for (text, expected) in cases {
            let err = parse_duration(text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("period \"{text}\": ")), "{text}: {err}");
            assert!(err.contains(expected), "{text}: {err} should contain {expected}");
        }
    }

    #[test]
    fn malformed_schedules_name_the_bad_part() {
        let err = |s: &str| ScheduleExpr::parse(s).unwrap_err().to_string();
        assert!(
            err("every hour").contains("\"every hour\" is not a repeating interval: expected R[n]/<start>/<period>")
        );
        assert!(err("X/2026-01-01T00:00:00Z/PT1H").contains("repetitions \"X\""));
        assert!(err("R-1/2026-01-01T00:00:00Z/PT1H").contains("repetitions \"R-1\""));
        assert!(
            err("R/2026-13-01T00:00:00Z/PT1H").contains("start \"2026-13-01T00:00:00Z\": not an ISO 8601 date-time")
        );
        assert!(err("R/tomorrow/PT1H").contains("start \"tomorrow\""));
        assert!(err("R/2026-01-01T00:00:00Z/1H").contains("period \"1H\""));
        assert!(err("R/2026-01-01T00:00:00Z/PT0S").contains("the period must be longer than zero"));
        assert!(err("R/a/b/c").contains("is not a repeating interval"));
        let tz = time_zone(Some("Mars/Olympus_Mons")).unwrap_err().to_string();
        assert!(tz.contains("time zone \"Mars/Olympus_Mons\": not a known IANA time zone name"), "{tz}");
    }

    #[test]
    fn empty_start_means_now() {
        let now = ts("2026-05-05T10:00:00Z");
        for expr in ["R//PT1H", "R/PT1H"] {
            let s = Schedule::parse(expr, None, now).unwrap();
            assert_eq!(s.start().timestamp(), now);
            assert_eq!(s.next_after(now), Some(ts("2026-05-05T11:00:00Z")));
            assert_eq!(s.next_after(ts("2026-05-05T09:59:59Z")), Some(now));
        }
    }

    #[test]
    fn next_is_strictly_after() {
        let s = schedule("R/2026-01-01T00:00:00Z/PT1H", None);
        assert_eq!(s.next_after(ts("2025-12-31T00:00:00Z")), Some(ts("2026-01-01T00:00:00Z")));
        assert_eq!(s.next_after(ts("2026-01-01T00:00:00Z")), Some(ts("2026-01-01T01:00:00Z")));
        assert_eq!(s.next_after(ts("2026-01-01T00:59:59.999Z")), Some(ts("2026-01-01T01:00:00Z")));
        // Far from the start, the jump is exact.
        assert_eq!(s.next_after(ts("2036-07-01T12:00:00Z")), Some(ts("2036-07-01T13:00:00Z")));
        let fine = schedule("R/2026-01-01T00:00:00Z/PT0.1S", None);
        assert_eq!(fine.next_after(ts("2026-01-01T00:00:00.25Z")), Some(ts("2026-01-01T00:00:00.3Z")));
    }

    #[test]
    fn between_is_half_open() {
        let s = schedule("R/2026-01-01T00:00:00Z/PT1H", None);
        assert_eq!(
            all(&s, "2026-01-01T01:00:00Z", "2026-01-01T03:00:00Z"),
            ["2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z"]
        );
        assert!(all(&s, "2026-01-01T01:00:00Z", "2026-01-01T01:30:00Z").is_empty());
    }

    #[test]
    fn r0_has_no_runs_and_rn_counts() {
        let none = schedule("R0/2026-01-01T00:00:00Z/PT1H", None);
        assert_eq!(none.next_after(ts("2025-01-01T00:00:00Z")), None);
        assert_eq!(none.remaining_after(ts("2025-01-01T00:00:00Z")), Some(0));
        let three = schedule("R3/2026-01-01T00:00:00Z/P1D", None);
        assert_eq!(
            all(&three, "2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]
        );
        assert_eq!(three.remaining_after(ts("2026-01-01T12:00:00Z")), Some(2));
        assert_eq!(three.next_after(ts("2026-01-03T00:00:00Z")), None, "no run after the last repetition");
        assert_eq!(three.count_between(ts("2025-01-01T00:00:00Z"), ts("2027-01-01T00:00:00Z")), 3);
        assert_eq!(three.count_between(ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:00Z")), 1, "half-open");
        assert_eq!(three.count_between(ts("2026-01-02T00:00:00Z"), ts("2026-01-01T00:00:00Z")), 0);
        assert_eq!(three.latest_until(ts("2025-12-31T00:00:00Z")), None);
        assert_eq!(three.latest_until(ts("2026-01-02T00:00:00Z")), Some(ts("2026-01-02T00:00:00Z")));
        assert_eq!(three.latest_until(ts("2030-01-01T00:00:00Z")), Some(ts("2026-01-03T00:00:00Z")), "the last");
        assert_eq!(schedule("R/2026-01-01T00:00:00Z/P1D", None).remaining_after(ts("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn month_ends_do_not_drift() {
        let s = schedule("R/2026-01-31T12:00:00Z/P1M", None);
        assert_eq!(
            all(&s, "2026-01-01T00:00:00Z", "2026-05-01T00:00:00Z"),
            ["2026-01-31T12:00:00Z", "2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z", "2026-04-30T12:00:00Z"]
        );
        assert_eq!(s.next_after(ts("2028-02-01T00:00:00Z")), Some(ts("2028-02-29T12:00:00Z")), "leap February");
    }

    #[test]
    fn leap_days() {
        let yearly = schedule("R/2024-02-29T00:00:00Z/P1Y", None);
        assert_eq!(
            all(&yearly, "2024-01-01T00:00:00Z", "2028-03-01T00:00:00Z"),
            [
                "2024-02-29T00:00:00Z",
                "2025-02-28T00:00:00Z",
                "2026-02-28T00:00:00Z",
                "2027-02-28T00:00:00Z",
                "2028-02-29T00:00:00Z"
            ]
        );
        let daily = schedule("R/2028-02-28T06:00:00Z/P1D", None);
        assert_eq!(daily.next_after(ts("2028-02-28T06:00:00Z")), Some(ts("2028-02-29T06:00:00Z")));
    }

    #[test]
    fn weeks_are_seven_calendar_days() {
        let s = schedule("R/2026-03-23T09:00:00/P1W", Some("Europe/Berlin"));
        // 23 March is before the DST change (UTC+1); 30 March is after it (UTC+2): still 09:00 local.
        assert_eq!(
            all(&s, "2026-03-23T00:00:00Z", "2026-04-01T00:00:00Z"),
            ["2026-03-23T08:00:00Z", "2026-03-30T07:00:00Z"]
        );
    }

    #[test]
    fn berlin_spring_forward() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day.
        let s = schedule("R/2026-03-28T02:30:00/P1D", Some("Europe/Berlin"));
        assert_eq!(
            all(&s, "2026-03-27T00:00:00Z", "2026-03-31T00:00:00Z"),
            ["2026-03-28T01:30:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"],
            "the gap day runs at 03:30 CEST (01:30Z); the next day is back at 02:30 local"
        );
        // Exact hours are not wall-clock: PT24H from 12:00 CET lands at 13:00 CEST.
        let exact = schedule("R/2026-03-28T12:00:00/PT24H", Some("Europe/Berlin"));
        let next = exact.next_after(ts("2026-03-28T11:00:00Z")).unwrap();
        assert_eq!(next.to_zoned(TimeZone::get("Europe/Berlin").unwrap()).hour(), 13);
    }

    #[test]
    fn berlin_fall_back_runs_once() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice. One run, at the earlier.
        let s = schedule("R/2026-10-24T02:30:00/P1D", Some("Europe/Berlin"));
        assert_eq!(
            all(&s, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn new_york_dst_both_ways() {
        // Spring: 2026-03-08 02:00 EST -> 03:00 EDT. Daily 09:00 local stays 09:00 local.
        let s = schedule("R/2026-03-07T09:00:00/P1D", Some("America/New_York"));
        assert_eq!(
            all(&s, "2026-03-07T00:00:00Z", "2026-03-09T00:00:00Z"),
            ["2026-03-07T14:00:00Z", "2026-03-08T13:00:00Z"]
        );
        // Autumn: 2026-11-01 02:00 EDT -> 01:00 EST. Hourly exact runs keep one hour apart in real time.
        let hourly = schedule("R/2026-11-01T00:00:00/PT1H", Some("America/New_York"));
        assert_eq!(
            all(&hourly, "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z"),
            ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"],
            "01:00 EDT, 01:00 EST, 02:00 EST, 03:00 EST: four runs in four real hours"
        );
    }

    #[test]
    fn offset_start_in_another_zone() {
        // A start with an offset is a moment; the zone decides the calendar arithmetic after it.
        let s = schedule("R/2026-03-28T11:00:00Z/P1D", Some("Europe/Berlin"));
        assert_eq!(s.next_after(ts("2026-03-28T11:00:00Z")), Some(ts("2026-03-29T10:00:00Z")), "12:00 local both days");
    }

    #[test]
    fn long_running_schedules_are_fast_to_evaluate() {
        // A per-second schedule evaluated 50 years on takes a handful of steps, not 1.5 billion.
        let s = schedule("R/2000-01-01T00:00:00Z/PT1S", None);
        assert_eq!(s.next_after(ts("2050-06-01T00:00:00.5Z")), Some(ts("2050-06-01T00:00:01Z")));
        assert_eq!(s.count_between(ts("2049-01-01T00:00:00Z"), ts("2050-01-01T00:00:00Z")), 365 * 86_400);
        let monthly = schedule("R/1990-01-31T00:00:00Z/P1M", None);
        assert_eq!(monthly.next_after(ts("2090-02-01T00:00:00Z")), Some(ts("2090-02-28T00:00:00Z")));
    }
}
