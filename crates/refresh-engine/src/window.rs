//! Maintenance windows: a five-field cron expression (minute hour day-of-month month day-of-week) that opens a
//! window, how long it stays open, and the IANA time zone the expression is read in.
//!
//! Cron semantics are the classic ones: `*`, lists (`1,3`), ranges (`1-5`), steps (`*/15`, `0-30/10`), month and
//! weekday names (`JAN`, `MON`), Sunday as `0` or `7`; when both day-of-month and day-of-week are restricted, a day
//! matching either counts (as in Vixie cron). Times are matched on the wall clock of the zone, so `0 2 * * *` in
//! `Europe/Berlin` opens at 02:00 Berlin time in summer and in winter.

use std::time::Duration;

use jiff::{
    Timestamp, ToSpan,
    civil::{Date, DateTime},
    tz::{AmbiguousOffset, TimeZone},
};

/// Why a window cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The cron expression is malformed.
    #[error("schedule {schedule:?}: {reason}")]
    Schedule {
        /// The expression.
        schedule: String,
        /// What is wrong.
        reason: String,
    },
    /// The time zone is not in the tz database.
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    bits: u64,
    restricted: bool,
}

impl Field {
    fn has(self, value: i8) -> bool {
        value >= 0 && self.bits & (1 << value) != 0
    }
}

/// A parsed maintenance window.
#[derive(Clone, Debug)]
pub struct Schedule {
    minute: Field,
    hour: Field,
    day: Field,
    month: Field,
    weekday: Field,
    duration: Duration,
    tz: TimeZone,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn parse_value(text: &str, min: u8, max: u8, names: &[&str], name_base: u8) -> Result<u8, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(name_base + u8::try_from(i).unwrap_or(0));
    }
    let value: u8 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if value < min || value > max {
        return Err(format!("{value} is outside {min}-{max}"));
    }
    Ok(value)
}

fn parse_field(text: &str, min: u8, max: u8, names: &[&str], name_base: u8) -> Result<Field, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u8 = step.parse().map_err(|_| format!("step {step:?} is not a number"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                parse_value(a, min, max, names, name_base)?,
                parse_value(b, min, max, names, name_base)?,
            );
            if a > b {
                return Err(format!("range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = parse_value(range, min, max, names, name_base)?;
            // `5/10` means 5, 15, 25, ... as in Vixie cron.
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v = match v.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
    }
    // Vixie cron marks a field that begins with `*` (`*`, `*/2`) as unrestricted for the day-of-month /
    // day-of-week rule, even when a step thins it out.
    Ok(Field {
        bits,
        restricted: !text.starts_with('*'),
    })
}

impl Schedule {
    /// Parses `schedule` (five fields), a duration and an IANA time zone.
    pub fn parse(schedule: &str, duration: Duration, time_zone: &str) -> Result<Self, WindowError> {
        let error = |reason: String| WindowError::Schedule {
            schedule: schedule.to_owned(),
            reason,
        };
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(error(format!("expected 5 fields, found {}", fields.len())));
        };
        let mut weekday = parse_field(weekday, 0, 7, &WEEKDAYS, 0).map_err(|e| error(format!("day of week: {e}")))?;
        if weekday.bits & (1 << 7) != 0 {
            weekday.bits = (weekday.bits & !(1 << 7)) | 1;
        }
        if duration.is_zero() {
            return Err(error("the window duration is zero".into()));
        }
        let tz = TimeZone::get(time_zone).map_err(|_| WindowError::TimeZone(time_zone.to_owned()))?;
        let parsed = Self {
            minute: parse_field(minute, 0, 59, &[], 0).map_err(|e| error(format!("minute: {e}")))?,
            hour: parse_field(hour, 0, 23, &[], 0).map_err(|e| error(format!("hour: {e}")))?,
            day: parse_field(day, 1, 31, &[], 0).map_err(|e| error(format!("day of month: {e}")))?,
            month: parse_field(month, 1, 12, &MONTHS, 1).map_err(|e| error(format!("month: {e}")))?,
            weekday,
            duration,
            tz,
        };
        if !parsed.can_fire() {
            return Err(error(
                "it never fires (no month of the schedule has such a day); the rollout would wait forever".into(),
            ));
        }
        Ok(parsed)
    }

    /// Whether some calendar day matches: a day-of-month that no month of the schedule has (`30 2`, `31 4,6`)
    /// never fires when only the day of month decides (February counts 29 days: leap years exist).
    fn can_fire(&self) -> bool {
        const DAYS_IN_MONTH: [i8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let day_of_month_decides = !(self.day.restricted && self.weekday.restricted);
        if !day_of_month_decides {
            return true;
        }
        (1..=12i8)
            .filter(|m| self.month.has(*m))
            .any(|m| (1..=DAYS_IN_MONTH[usize::try_from(m - 1).unwrap_or(0)]).any(|d| self.day.has(d)))
            && self.weekday.bits & 0x7f != 0
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.day.has(date.day());
        let dow = self.weekday.has(date.weekday().to_sunday_zero_offset());
        // Vixie cron: both fields restricted -> either matches; otherwise both must (an unrestricted `*` matches
        // every day, a `*/2` only the days its step names).
        if self.day.restricted && self.weekday.restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The latest start at or before `t` (wall clock), searching back at most `horizon` days.
    fn previous_start(&self, t: DateTime, horizon: i64) -> Option<DateTime> {
        let floor = t.date().checked_sub(horizon.days()).ok()?;
        let mut t = t.with().second(0).subsec_nanosecond(0).build().ok()?;
        while t.date() >= floor {
            let date = t.date();
            if !self.month.has(date.month()) || !self.day_matches(date) {
                t = date
                    .to_datetime(jiff::civil::Time::midnight())
                    .checked_sub(1.minute())
                    .ok()?;
            } else if !self.hour.has(t.hour()) {
                t = t.with().minute(0).build().ok()?.checked_sub(1.minute()).ok()?;
            } else if !self.minute.has(t.minute()) {
                t = t.checked_sub(1.minute()).ok()?;
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The first start at or after `t` (wall clock), searching forward at most `horizon` days.
    fn next_start(&self, t: DateTime, horizon: i64) -> Option<DateTime> {
        let ceiling = t.date().checked_add(horizon.days()).ok()?;
        let mut t = t.with().second(0).subsec_nanosecond(0).build().ok()?;
        while t.date() <= ceiling {
            let date = t.date();
            if !self.month.has(date.month()) || !self.day_matches(date) {
                t = date.tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight());
            } else if !self.hour.has(t.hour()) {
                t = t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
            } else if !self.minute.has(t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The instant a wall-clock start happens, as cron runs it: a start that a fall-back repeats happens once, at
    /// its first occurrence; a start that a spring-forward skips happens when the clock jumps over it. Later wall
    /// times never map to earlier instants, so searching wall-clock starts in order finds instants in order.
    fn instant(&self, t: DateTime) -> Option<Timestamp> {
        let ambiguous = self.tz.to_ambiguous_timestamp(t);
        match ambiguous.offset() {
            AmbiguousOffset::Gap { after, .. } => {
                // `t - after` lies before the transition that skipped `t`; the next transition is the jump.
                let before_jump = after.to_timestamp(t).ok()?;
                self.tz.following(before_jump).next().map(|change| change.timestamp())
            }
            AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => ambiguous.earlier().ok(),
        }
    }

    /// When the window containing `now` closes, if one is open. Decided on absolute time: after a fall-back the
    /// wall clock shows a start again that already happened an hour ago, and the window opened then.
    pub fn open_until(&self, now: Timestamp) -> Option<Timestamp> {
        let wall = now.to_zoned(self.tz.clone()).datetime();
        let horizon = i64::try_from(self.duration.as_secs() / 86_400).unwrap_or(i64::MAX / 2) + 2;
        // Begin a few hours ahead on the wall clock: a start later on today's wall clock than `now` may already
        // have happened (the repeated hour of a fall-back). Take the latest start that happened at or before now.
        let mut from = wall.checked_add(DST_SLACK_HOURS.hours()).ok()?;
        let start = loop {
            let candidate = self.previous_start(from, horizon)?;
            let at = self.instant(candidate)?;
            if at <= now {
                break at;
            }
            from = candidate.checked_sub(1.minute()).ok()?;
        };
        let end = start
            .checked_add(jiff::SignedDuration::try_from(self.duration).ok()?)
            .ok()?;
        (now < end).then_some(end)
    }

    /// When the next window opens after `now` (within about four years, enough for `29 2 *`); always later than
    /// `now`.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let wall = now.to_zoned(self.tz.clone()).datetime();
        // Wall-clock starts at or after `now`'s wall time, skipping those that already happened: in a fall-back's
        // repeated hour the wall clock shows times whose first occurrence is past.
        let mut from = wall;
        loop {
            let candidate = self.next_start(from, 4 * 366 + 1)?;
            let at = self.instant(candidate)?;
            if at > now {
                return Some(at);
            }
            from = candidate.checked_add(1.minute()).ok()?;
        }
    }
}

/// How far a zone's wall clock can move at one change (the largest daylight-saving shift in the tz database is
/// two hours; one more for safety).
const DST_SLACK_HOURS: i64 = 3;

/// Whether a node group may start rolling now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// No windows configured: any time.
    Always,
    /// A window is open until the given time.
    Open {
        /// When the (latest-closing) open window closes.
        closes_at: Timestamp,
    },
    /// Every window is closed.
    Closed {
        /// When the next one opens (`None` if no schedule ever matches again, e.g. `0 0 30 2 *`).
        opens_at: Option<Timestamp>,
    },
}

impl WindowState {
    /// Whether rolling may start.
    pub fn is_open(self) -> bool {
        !matches!(self, Self::Closed { .. })
    }
}

/// The state of a set of windows at `now`.
pub fn window_state(windows: &[Schedule], now: Timestamp) -> WindowState {
    if windows.is_empty() {
        return WindowState::Always;
    }
    if let Some(closes_at) = windows.iter().filter_map(|w| w.open_until(now)).max() {
        return WindowState::Open { closes_at };
    }
    WindowState::Closed {
        opens_at: windows.iter().filter_map(|w| w.next_open(now)).min(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        for never in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 FEB *"] {
            let err = Schedule::parse(never, hours(1), "UTC").expect_err(never);
            assert!(err.to_string().contains("never fires"), "{never}: {err}");
        }
        // 29 February exists in leap years; a weekday makes `30 2` fire on that weekday (either field matches).
        for fires in ["0 0 29 2 *", "0 0 30 2 MON"] {
            assert!(Schedule::parse(fires, hours(1), "UTC").is_ok(), "{fires}");
        }
    }

    #[test]
    fn a_day_of_month_step_with_a_weekday_needs_both_as_in_vixie_cron() {
        // `*/2` starts with `*`, so Vixie cron requires both fields: odd days of the month that are Mondays.
        let w = Schedule::parse("0 3 */2 * MON", hours(1), "UTC").expect("parse");
        // Mondays in November 2026: 16 and 30 are even (closed), 23 is odd (open); the next one after the 30th is
        // 7 December (odd).
        assert_eq!(w.open_until(ts("2026-11-16T03:30:00Z")), None);
        assert_eq!(
            w.open_until(ts("2026-11-23T03:30:00Z")),
            Some(ts("2026-11-23T04:00:00Z"))
        );
        assert_eq!(w.open_until(ts("2026-11-30T03:30:00Z")), None);
        assert_eq!(
            w.next_open(ts("2026-11-30T04:00:00Z")),
            Some(ts("2026-12-07T03:00:00Z"))
        );
        // An odd day that is not a Monday: closed.
        assert_eq!(w.open_until(ts("2026-11-25T03:30:00Z")), None);
        // Both restricted without a star: either matches (the 1st, or any Monday).
        let either = Schedule::parse("0 3 1 * MON", hours(1), "UTC").expect("parse");
        assert!(either.open_until(ts("2026-11-23T03:30:00Z")).is_some(), "a Monday");
        assert!(
            either.open_until(ts("2026-12-01T03:30:00Z")).is_some(),
            "the 1st (a Tuesday)"
        );
    }

    #[test]
    fn weekday_night_window_in_utc() {
        let w = Schedule::parse("0 2 * * 1-5", hours(2), "UTC").expect("parse");
        // 2026-11-23 is a Monday.
        assert_eq!(
            w.open_until(ts("2026-11-23T02:30:00Z")),
            Some(ts("2026-11-23T04:00:00Z"))
        );
        assert_eq!(w.open_until(ts("2026-11-23T04:00:00Z")), None, "the end is exclusive");
        assert_eq!(w.open_until(ts("2026-11-23T01:59:59Z")), None);
        // Saturday: closed; next opens Monday 02:00.
        assert_eq!(w.open_until(ts("2026-11-21T02:30:00Z")), None);
        assert_eq!(
            w.next_open(ts("2026-11-21T02:30:00Z")),
            Some(ts("2026-11-23T02:00:00Z"))
        );
    }

    #[test]
    fn a_window_spanning_midnight_is_open_after_midnight() {
        let w = Schedule::parse("0 23 * * SAT", hours(3), "UTC").expect("parse");
        // Saturday 2026-11-21 23:00 to Sunday 02:00.
        assert!(w.open_until(ts("2026-11-22T01:00:00Z")).is_some());
        assert!(w.open_until(ts("2026-11-22T02:00:00Z")).is_none());
    }

    #[test]
    fn the_time_zone_follows_daylight_saving() {
        let w = Schedule::parse("0 2 * * *", hours(1), "Europe/Berlin").expect("parse");
        // Summer (CEST, UTC+2): 02:00 Berlin = 00:00 UTC; winter (CET, UTC+1): 01:00 UTC.
        assert!(w.open_until(ts("2026-07-01T00:30:00Z")).is_some());
        assert!(w.open_until(ts("2026-07-01T01:30:00Z")).is_none());
        assert!(w.open_until(ts("2026-12-01T01:30:00Z")).is_some());
        assert!(w.open_until(ts("2026-12-01T00:30:00Z")).is_none());
    }

    // The 2026 change days: Europe/Berlin springs forward on 29 March at 01:00Z (02:00 CET -> 03:00 CEST) and
    // falls back on 25 October at 01:00Z (03:00 CEST -> 02:00 CET); America/New_York springs forward on 8 March at
    // 07:00Z (02:00 EST -> 03:00 EDT) and falls back on 1 November at 06:00Z (02:00 EDT -> 01:00 EST).

    #[test]
    fn a_start_skipped_by_spring_forward_opens_when_the_clock_jumps() {
        let berlin = Schedule::parse("30 2 * * *", hours(1), "Europe/Berlin").expect("parse");
        // 02:30 does not exist on 29 March: the window opens at the jump (03:00 CEST = 01:00Z) for an hour.
        assert_eq!(
            berlin.next_open(ts("2026-03-28T23:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
        assert_eq!(berlin.open_until(ts("2026-03-29T00:59:00Z")), None);
        assert_eq!(
            berlin.open_until(ts("2026-03-29T01:30:00Z")),
            Some(ts("2026-03-29T02:00:00Z"))
        );
        assert_eq!(berlin.open_until(ts("2026-03-29T02:00:00Z")), None);
        // The day after, 02:30 CEST again.
        assert_eq!(
            berlin.next_open(ts("2026-03-29T02:00:00Z")),
            Some(ts("2026-03-30T00:30:00Z"))
        );

        let new_york = Schedule::parse("30 2 * * *", Duration::from_secs(1800), "America/New_York").expect("parse");
        assert_eq!(
            new_york.next_open(ts("2026-03-08T06:00:00Z")),
            Some(ts("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            new_york.open_until(ts("2026-03-08T07:10:00Z")),
            Some(ts("2026-03-08T07:30:00Z"))
        );
    }

    #[test]
    fn a_start_repeated_by_fall_back_opens_once_and_stays_open_through_the_repeat() {
        let berlin = Schedule::parse("30 2 * * *", hours(1), "Europe/Berlin").expect("parse");
        // 02:30 CEST = 00:30Z opens the window until 01:30Z. At 01:10Z the wall clock reads 02:10 CET, before the
        // start on the wall clock, but the window opened 40 minutes ago and is open.
        assert_eq!(
            berlin.open_until(ts("2026-10-25T00:40:00Z")),
            Some(ts("2026-10-25T01:30:00Z"))
        );
        assert_eq!(
            berlin.open_until(ts("2026-10-25T01:10:00Z")),
            Some(ts("2026-10-25T01:30:00Z"))
        );
        // The wall clock passes 02:30 a second time (01:30Z): it does not open again.
        assert_eq!(berlin.open_until(ts("2026-10-25T01:40:00Z")), None);
        // The next opening is tomorrow's 02:30 CET, never the past first 02:30 of today.
        assert_eq!(
            berlin.next_open(ts("2026-10-25T01:40:00Z")),
            Some(ts("2026-10-26T01:30:00Z"))
        );

        let new_york = Schedule::parse("0 1 * * *", Duration::from_secs(1800), "America/New_York").expect("parse");
        // 01:00 EDT = 05:00Z, open until 05:30Z; at 06:10Z the wall clock reads 01:10 EST: closed, next 06:00Z
        // tomorrow (01:00 EST).
        assert_eq!(
            new_york.open_until(ts("2026-11-01T05:10:00Z")),
            Some(ts("2026-11-01T05:30:00Z"))
        );
        assert_eq!(new_york.open_until(ts("2026-11-01T06:10:00Z")), None);
        assert_eq!(
            new_york.next_open(ts("2026-11-01T05:45:00Z")),
            Some(ts("2026-11-02T06:00:00Z"))
        );
    }

    #[test]
    fn around_every_2026_change_the_answers_are_consistent_minute_by_minute() {
        // Invariants over four hours around each change, every minute, for starts inside, before and after the
        // shifted hour: the next opening lies in the future; an open window closes in the future, at most one
        // duration from now; when closed, the next opening is not earlier than the window that just closed.
        let changes = [
            ("Europe/Berlin", "2026-03-29T01:00:00Z"),
            ("Europe/Berlin", "2026-10-25T01:00:00Z"),
            ("America/New_York", "2026-03-08T07:00:00Z"),
            ("America/New_York", "2026-11-01T06:00:00Z"),
        ];
        for (zone, change) in changes {
            for schedule in [
                "0 1 * * *",
                "30 1 * * *",
                "0 2 * * *",
                "30 2 * * *",
                "0 3 * * *",
                "*/20 * * * *",
            ] {
                let w = Schedule::parse(schedule, Duration::from_secs(1800), zone).expect("parse");
                let change = ts(change);
                for minute in -120i64..=120 {
                    let now = change
                        .checked_add(jiff::SignedDuration::from_mins(minute))
                        .expect("now");
                    let next = w.next_open(now).expect("opens again");
                    assert!(
                        next > now,
                        "{zone} {schedule} at {now}: next opening {next} is not in the future"
                    );
                    if let Some(end) = w.open_until(now) {
                        assert!(end > now, "{zone} {schedule} at {now}: closes at {end}");
                        assert!(
                            end.duration_since(now) <= jiff::SignedDuration::from_mins(30),
                            "{zone} {schedule} at {now}: open until {end}, longer than the duration"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn steps_lists_names_and_sunday_as_seven() {
        let w = Schedule::parse("*/15 9,17 * JAN-MAR 7", Duration::from_secs(600), "UTC").expect("parse");
        // 2027-01-03 is a Sunday.
        assert!(w.open_until(ts("2027-01-03T17:45:30Z")).is_some());
        assert!(w.open_until(ts("2027-01-03T17:50:00Z")).is_some());
        assert!(w.open_until(ts("2027-01-03T17:55:00Z")).is_none());
        assert!(w.open_until(ts("2027-01-04T09:00:00Z")).is_none(), "Monday");
        assert!(w.open_until(ts("2027-04-04T09:00:00Z")).is_none(), "April");
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        let w = Schedule::parse("0 0 1 * MON", hours(1), "UTC").expect("parse");
        assert!(
            w.open_until(ts("2026-12-01T00:10:00Z")).is_some(),
            "the 1st (a Tuesday)"
        );
        assert!(w.open_until(ts("2026-11-23T00:10:00Z")).is_some(), "a Monday");
        assert!(w.open_until(ts("2026-11-24T00:10:00Z")).is_none());
    }

    #[test]
    fn malformed_schedules_and_zones_are_refused() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
        ] {
            assert!(
                matches!(Schedule::parse(bad, hours(1), "UTC"), Err(WindowError::Schedule { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            Schedule::parse("0 2 * * *", hours(1), "Mars/Olympus").unwrap_err(),
            WindowError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn the_state_of_several_windows() {
        let night = Schedule::parse("0 2 * * *", hours(2), "UTC").expect("parse");
        let noon = Schedule::parse("0 12 * * *", hours(1), "UTC").expect("parse");
        let windows = [night, noon];
        assert_eq!(window_state(&[], ts("2026-11-21T08:00:00Z")), WindowState::Always);
        assert_eq!(
            window_state(&windows, ts("2026-11-21T12:30:00Z")),
            WindowState::Open {
                closes_at: ts("2026-11-21T13:00:00Z")
            }
        );
        assert_eq!(
            window_state(&windows, ts("2026-11-21T08:00:00Z")),
            WindowState::Closed {
                opens_at: Some(ts("2026-11-21T12:00:00Z"))
            }
        );
        // A schedule that never opens cannot be built any more (a_schedule_that_never_fires_is_refused).
    }
}
