//! `eventTime` in every form seen in the field, and its normal form.
//!
//! Accepted: ISO 8601 with `T` or a space between date and time, 0–9 fraction digits,
//! and a UTC offset written `Z`, `+00:00`, `+0000` or `+00`; Go's `time.String()` form
//! used by the seed's at-noisy sample, `2017-10-19 19:07:50.32 +0000 UTC`. A time without
//! an offset (seed 003's `2022-07-12T10:55:00`) is refused by [`parse`] — CADF makes the
//! offset mandatory — and read as UTC by [`parse_assuming_utc`], which says so, for the
//! lenient check to count and report. The normal form is Activity Tracker's, in UTC with
//! milliseconds: `2017-10-19T19:07:50.320+0000`.

use std::fmt::Write;

/// An instant: seconds since the Unix epoch (UTC) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.sss+0000`, in UTC.
    pub fn to_at_format(self) -> String {
        let mut out = String::with_capacity(28);
        let _ = self.write_at_format(&mut out);
        out
    }

    /// Writes [`Timestamp::to_at_format`]'s text to `out`, digit by digit: this runs for
    /// every event read, and `format!`'s machinery cost more than the rest of the check.
    pub fn write_at_format(self, out: &mut impl Write) -> std::fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let secs_of_day = u32::try_from(self.secs.rem_euclid(86_400)).unwrap_or(0);
        let (y, m, d) = civil_from_days(days);
        let Ok(year @ 0..=9999) = u32::try_from(y) else {
            return write!(
                out,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
                secs_of_day / 3600,
                secs_of_day / 60 % 60,
                secs_of_day % 60,
                self.nanos / 1_000_000
            );
        };
        let mut text = *b"0000-00-00T00:00:00.000+0000";
        for (range, value) in [
            (0..4, year),
            (5..7, m),
            (8..10, d),
            (11..13, secs_of_day / 3600),
            (14..16, secs_of_day / 60 % 60),
            (17..19, secs_of_day % 60),
            (20..23, self.nanos / 1_000_000),
        ] {
            let mut v = value;
            for c in text[range].iter_mut().rev() {
                *c = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        out.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }

    /// The UTC calendar date, `YYYY-MM-DD`.
    pub fn date(self) -> String {
        let (y, m, d) = civil_from_days(self.secs.div_euclid(86_400));
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// Parses an `eventTime`; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<Timestamp, String> {
    parse_inner(text, false).map(|(t, _)| t)
}

/// Parses an `eventTime`, reading one that ends without a UTC offset as UTC; the flag
/// says that it did.
pub fn parse_assuming_utc(text: &str) -> Result<(Timestamp, bool), String> {
    parse_inner(text, true)
}

fn parse_inner(text: &str, assume_utc: bool) -> Result<(Timestamp, bool), String> {
    let b = text.as_bytes();
    let mut p = Cursor { b, i: 0 };
    let year = p.digits(4).ok_or("expected the year as YYYY")?;
    p.expect(b'-').ok_or("expected '-' after the year")?;
    let month = p.digits(2).ok_or("expected the month as MM")?;
    p.expect(b'-').ok_or("expected '-' after the month")?;
    let day = p.digits(2).ok_or("expected the day as DD")?;
    if !(p.eat(b'T') || p.eat(b't') || p.eat(b' ')) {
        return Err("expected 'T' between date and time".into());
    }
    let hour = p.digits(2).ok_or("expected the hour as HH")?;
    p.expect(b':').ok_or("expected ':' after the hour")?;
    let minute = p.digits(2).ok_or("expected the minutes as MM")?;
    p.expect(b':').ok_or("expected ':' after the minutes")?;
    let second = p.digits(2).ok_or("expected the seconds as SS")?;
    let nanos = if p.eat(b'.') || p.eat(b',') {
        p.fraction()?
    } else {
        0
    };
    p.eat(b' ');
    let assumed = assume_utc && p.rest().is_empty();
    let offset = if assumed { 0 } else { p.offset()? };
    // Go's form ends with the zone's name (" UTC"); the numeric offset has said it all.
    p.eat(b' ');
    if !p.rest().iter().all(u8::is_ascii_alphabetic) {
        return Err("unexpected text after the UTC offset".into());
    }
    check_ranges(year, month, day, hour, minute, second)?;
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second.min(59)) as i64 - offset;
    Ok((Timestamp { secs, nanos }, assumed))
}

fn check_ranges(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Result<(), String> {
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} does not exist"));
    }
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month as usize - 1];
    if day == 0 || day > days_in_month {
        return Err(format!(
            "day {day} does not exist in month {month} of {year}"
        ));
    }
    // 60 is a leap second; it is read as :59.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} does not exist"
        ));
    }
    Ok(())
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(s.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    fn rest(&self) -> &[u8] {
        &self.b[self.i..]
    }

    fn fraction(&mut self) -> Result<u32, String> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty() || digits.len() > 9 {
            return Err("expected 1 to 9 digits of fraction of a second".into());
        }
        let value = digits
            .iter()
            .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
        Ok(value * 10u32.pow(9 - digits.len() as u32))
    }

    /// `Z`, `±HH:MM`, `±HHMM` or `±HH`, as seconds east of UTC.
    fn offset(&mut self) -> Result<i64, String> {
        if self.eat(b'Z') || self.eat(b'z') {
            return Ok(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Err("no UTC offset (write Z or +0000)".into());
        };
        let hours = self.digits(2).ok_or("expected the offset's hours as HH")?;
        self.eat(b':');
        let minutes = self.digits(2).unwrap_or(0);
        if hours > 23 || minutes > 59 {
            return Err("the UTC offset is out of range".into());
        }
        Ok(sign * i64::from(hours * 3600 + minutes * 60))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digit_writer_matches_formatted_output() {
        // From the epoch through a leap day to the last second of year 9999, and past it
        // (five-digit years take the formatting path).
        for secs in [
            0,
            86_399,
            951_782_400,
            1_763_769_600,
            253_402_300_799,
            253_402_300_800,
        ] {
            for nanos in [0, 7_000_000, 999_999_999] {
                let (y, m, d) = civil_from_days(i64::div_euclid(secs, 86_400));
                let day = i64::rem_euclid(secs, 86_400);
                let want = format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
                    day / 3600,
                    day / 60 % 60,
                    day % 60,
                    nanos / 1_000_000
                );
                assert_eq!(Timestamp { secs, nanos }.to_at_format(), want);
            }
        }
    }

    #[test]
    fn every_field_form_normalises() {
        let cases = [
            (
                "2017-10-19 19:07:50.32 +0000 UTC",
                "2017-10-19T19:07:50.320+0000",
            ),
            (
                "2017-10-19T19:07:50.32+0000",
                "2017-10-19T19:07:50.320+0000",
            ),
            (
                "2018-06-13T00:05:39.11+0000",
                "2018-06-13T00:05:39.110+0000",
            ),
            (
                "2014-02-27T19:29:30.855665+0000",
                "2014-02-27T19:29:30.855+0000",
            ),
            ("2020-03-22T09:36:07Z", "2020-03-22T09:36:07.000+0000"),
            (
                "2020-03-22T09:36:07.123456789Z",
                "2020-03-22T09:36:07.123+0000",
            ),
            ("2020-03-22T09:36:07+00:00", "2020-03-22T09:36:07.000+0000"),
            (
                "2020-03-22T11:36:07.5+02:00",
                "2020-03-22T09:36:07.500+0000",
            ),
            ("2020-03-22T01:00:00-0330", "2020-03-22T04:30:00.000+0000"),
            ("2020-01-01T00:30:00+01", "2019-12-31T23:30:00.000+0000"),
            ("2024-02-29T23:59:60Z", "2024-02-29T23:59:59.000+0000"),
            ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59.000+0000"),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input).map(|t| t.to_at_format()).as_deref(),
                Ok(want),
                "{input}"
            );
        }
    }

    #[test]
    fn impossible_or_ambiguous_times_are_refused() {
        for bad in [
            "2017-10-19T19:07:50",
            "2017-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2017-10-19T24:00:00Z",
            "2017-10-19T19:07:50.Z",
            "2017-10-19T19:07:50.1234567890Z",
            "17-10-19T19:07:50Z",
            "2017-10-19T19:07:50+25:00",
            "2017-10-19T19:07:50Z trailing1",
            "yesterday",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn civil_conversion_round_trips() {
        for days in [-800_000, -1, 0, 1, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
