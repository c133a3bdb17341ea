//! Timestamp handling of COMPAT §6.1, §6.2 and §6.4.
//!
//! MySQL timestamps are read as text (`CAST(col AS CHAR)`, §6.4) so that invalid values such as the
//! zero date `0000-00-00 00:00:00` never fail: PHP (Carbon) accepts them and normalises the
//! out-of-range fields the way `mktime` does, and the API output shows the result
//! (`-0001-11-30`). Everything here reproduces that normalisation and PHP's formats.

use chrono::{
    Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone,
    Timelike,
};
use chrono_tz::Tz;

/// The raw fields of a `YYYY-MM-DD HH:MM:SS` text, before any calendar normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wall {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Splits MySQL's `YYYY-MM-DD HH:MM:SS` text into raw fields (COMPAT §6.4).
///
/// Only the layout and the ranges MySQL can store are checked (month 0–12, day 0–31, hour 0–23,
/// minute and second 0–59); calendar validity is deliberately not, because MySQL may hand back
/// zero dates and zero parts (`0000-00-00`, `2024-00-15`) or, with `ALLOW_INVALID_DATES`,
/// `2024-02-31`, and PHP turns those into real dates via [`normalize`] instead of failing.
/// Anything else (fractional seconds, a `T` separator, other lengths) is `None`.
pub fn parse_wall(s: &str) -> Option<Wall> {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let field = |from: usize, to: usize| -> Option<u32> {
        let digits = &b[from..to];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
        )
    };
    let wall = Wall {
        year: i32::try_from(field(0, 4)?).ok()?,
        month: field(5, 7)?,
        day: field(8, 10)?,
        hour: field(11, 13)?,
        minute: field(14, 16)?,
        second: field(17, 19)?,
    };
    let in_range = wall.month <= 12
        && wall.day <= 31
        && wall.hour <= 23
        && wall.minute <= 59
        && wall.second <= 59;
    in_range.then_some(wall)
}

/// PHP/timelib normalisation of out-of-range fields (COMPAT §6.1, §6.2, §6.4).
///
/// Like `mktime`, overflow carries upwards: seconds into minutes into hours into days, months
/// beyond 12 into years, and a day beyond the month's length into the next month. Zero counts as
/// "one before the first": month 0 is December of the previous year and day 0 the last day of the
/// previous month, so `0000-00-00 00:00:00` becomes `-0001-11-30 00:00:00` (astronomical year
/// numbering, as PHP uses: year 0 exists, `-0001` precedes it).
///
/// The arithmetic below is equivalent: normalise the month first, then add `day - 1` days (and the
/// carried hours) to the first of that month. Results beyond chrono's range (only reachable with
/// hand-built absurd fields, never from [`parse_wall`]) saturate to `NaiveDateTime::MIN`/`MAX`.
pub fn normalize(w: &Wall) -> NaiveDateTime {
    let months = i64::from(w.year) * 12 + i64::from(w.month) - 1;
    let computed = (|| {
        let year = i32::try_from(months.div_euclid(12)).ok()?;
        let month = u32::try_from(months.rem_euclid(12) + 1).ok()?;
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let seconds = i64::from(w.hour) * 3600 + i64::from(w.minute) * 60 + i64::from(w.second);
        let days = i64::from(w.day) - 1 + seconds.div_euclid(86_400);
        let date = first.checked_add_signed(TimeDelta::try_days(days)?)?;
        let secs_of_day = u32::try_from(seconds.rem_euclid(86_400)).ok()?;
        let time = NaiveTime::from_num_seconds_from_midnight_opt(secs_of_day, 0)?;
        Some(date.and_time(time))
    })();
    computed.unwrap_or(if months < 0 {
        NaiveDateTime::MIN
    } else {
        NaiveDateTime::MAX
    })
}

/// Interprets a wall-clock time in `tz` and returns the UTC wall time (COMPAT §6.4).
///
/// DST follows PHP: an ambiguous time (clocks going back) maps to its first occurrence, i.e. the
/// earlier UTC instant; a time inside a gap (clocks going forward) is moved forward by the length
/// of the gap, which is the same as applying the offset in force just before the gap
/// (Europe/Berlin `2024-03-31 02:30` → `03:30` CEST → `01:30` UTC).
pub fn local_to_utc(naive: NaiveDateTime, tz: Tz) -> NaiveDateTime {
    use chrono::LocalResult;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => dt.naive_utc(),
        LocalResult::Ambiguous(a, b) => a.naive_utc().min(b.naive_utc()),
        LocalResult::None => gap_to_utc(naive, tz),
    }
}

/// A local time that does not exist. Around a forward transition at instant `T` with offsets
/// `before < after`, the gap is `[T + before, T + after)` in local time, so `naive - before` lies
/// at or after `T` (offset `after` there) and `naive - after` lies before `T` (offset `before`).
/// Two probes starting from any nearby guess therefore yield both offsets; the smaller one is the
/// offset before the gap, which PHP applies. Works for gaps of any length (Pacific/Apia skipped a
/// whole day in 2011) and non-hour offsets (Australia/Lord_Howe's 30-minute DST).
fn gap_to_utc(naive: NaiveDateTime, tz: Tz) -> NaiveDateTime {
    let offset_at = |utc: NaiveDateTime| -> FixedOffset { tz.offset_from_utc_datetime(&utc).fix() };
    let minus = |t: NaiveDateTime, off: FixedOffset| {
        t.checked_sub_signed(TimeDelta::seconds(i64::from(off.local_minus_utc())))
            .unwrap_or(t)
    };
    let guess = offset_at(naive);
    let first = offset_at(minus(naive, guess));
    let second = offset_at(minus(naive, first));
    let before = if first.local_minus_utc() <= second.local_minus_utc() {
        first
    } else {
        second
    };
    minus(naive, before)
}

/// PHP `Y`: at least four digits, `-` before negative years (`-0001`, `2024`, `10000`).
fn php_year(year: i32) -> String {
    if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("{year:04}")
    }
}

/// Year part of Carbon's `toISOString()` (what Laravel's JSON serialisation of dates uses): four
/// digits for 0–9999, otherwise a sign and six digits (`-000001`, `+010000`).
fn iso_year(year: i32) -> String {
    if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        let sign = if year < 0 { '-' } else { '+' };
        format!("{sign}{:06}", year.unsigned_abs())
    }
}

/// The conversation `date` field (COMPAT §6.1): the stored `updated_at`, read as wall time in
/// `APP_TIMEZONE`, converted to UTC and printed as `YYYY-MM-DDTHH:MM:SS.000000Z`.
///
/// `None` for SQL NULL. Text that is not MySQL's timestamp layout also gives `None` (JSON `null`):
/// it cannot come from a TIMESTAMP column read via `CAST(... AS CHAR)`, and `null` is the value the
/// field already has for NULL, so clients handle it; the request must never fail over it (§6.3).
pub fn conversation_date(stored: Option<&str>, tz: Tz) -> Option<String> {
    let wall = parse_wall(stored?)?;
    let utc = local_to_utc(normalize(&wall), tz);
    Some(format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.000000Z",
        iso_year(utc.year()),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    ))
}

/// The date fields of a message item (COMPAT §6.2), all strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDate {
    /// PHP `Y`, e.g. `2024`, `-0001`.
    pub year: String,
    /// PHP `m`, e.g. `05`.
    pub month: String,
    /// PHP `d-M`, e.g. `01-May`.
    pub day_of_month: String,
    /// PHP `F d, Y`, e.g. `May 01, 2024`.
    pub date: String,
    /// PHP `h:i a`, e.g. `01:45 pm`.
    pub time: String,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Message date fields from the stored `created_at` (COMPAT §6.2): the normalised wall time in
/// `APP_TIMEZONE`, with no time zone conversion, in English whatever the locale.
///
/// Text that does not parse (impossible for a TIMESTAMP read as text, §6.4) falls back to the
/// values of the zero date, `0000-00-00 00:00:00`: the fields are non-nullable strings in the PHP
/// output and §6.3 forbids answering 500 over bad data, so the value MySQL itself uses for "no valid
/// date" is the closest faithful answer.
pub fn message_date(stored: &str) -> MessageDate {
    let wall = parse_wall(stored).unwrap_or(Wall {
        year: 0,
        month: 0,
        day: 0,
        hour: 0,
        minute: 0,
        second: 0,
    });
    let t = normalize(&wall);
    let year = php_year(t.year());
    let month_name = MONTHS[t.month0() as usize];
    let (is_pm, hour12) = t.hour12();
    MessageDate {
        month: format!("{:02}", t.month()),
        day_of_month: format!("{:02}-{}", t.day(), &month_name[..3]),
        date: format!("{month_name} {:02}, {year}", t.day()),
        time: format!(
            "{hour12:02}:{:02} {}",
            t.minute(),
            if is_pm { "pm" } else { "am" }
        ),
        year,
    }
}

/// PHP `Y-m-d H:i:s` of a wall time, the layout Laravel writes to TIMESTAMP columns (COMPAT §6.4,
/// `now` in §0).
pub fn format_wall(dt: NaiveDateTime) -> String {
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}",
        php_year(dt.year()),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The current wall-clock time in `tz`, whole seconds (one value per request, COMPAT §0).
pub fn now_naive(tz: Tz) -> NaiveDateTime {
    let now = chrono::Utc::now().with_timezone(&tz).naive_local();
    now.with_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Asia, Australia, Europe, Pacific, UTC};

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn norm(s: &str) -> String {
        format_wall(normalize(&parse_wall(s).unwrap()))
    }

    #[test]
    fn parse_wall_fields_and_rejections() {
        assert_eq!(
            parse_wall("2024-05-01 13:45:09"),
            Some(Wall {
                year: 2024,
                month: 5,
                day: 1,
                hour: 13,
                minute: 45,
                second: 9
            })
        );
        assert!(parse_wall("0000-00-00 00:00:00").is_some());
        assert!(parse_wall("2024-02-31 00:00:00").is_some());
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T13:45:09",
            "2024-05-01 13:45:09.123456",
            "2024-13-01 00:00:00",
            "2024-01-32 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 00:60:00",
            "2024-01-01 00:00:60",
            "+024-01-01 00:00:00",
            "2024-1-01 00:00:000",
            "２０２４-01-01 00:00",
        ] {
            assert_eq!(parse_wall(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn normalisation_carries_like_php() {
        assert_eq!(norm("0000-00-00 00:00:00"), "-0001-11-30 00:00:00");
        assert_eq!(norm("2024-02-30 10:00:00"), "2024-03-01 10:00:00");
        assert_eq!(norm("2023-02-29 00:00:00"), "2023-03-01 00:00:00");
        assert_eq!(norm("2024-02-29 00:00:00"), "2024-02-29 00:00:00");
        assert_eq!(norm("2024-00-15 00:00:00"), "2023-12-15 00:00:00");
        assert_eq!(norm("2024-03-00 00:00:00"), "2024-02-29 00:00:00");
        assert_eq!(norm("2024-01-00 00:00:00"), "2023-12-31 00:00:00");
        assert_eq!(norm("2024-04-31 23:59:59"), "2024-05-01 23:59:59");
        assert_eq!(norm("2024-00-00 00:00:00"), "2023-11-30 00:00:00");
        let w = Wall {
            year: 2024,
            month: 14,
            day: 45,
            hour: 25,
            minute: 61,
            second: 61,
        };
        // Month 14 of 2024 is Feb 2025; its day 45 is Mar 17; 25 h carries one more day and
        // 01:61:61 becomes 02:02:01.
        assert_eq!(format_wall(normalize(&w)), "2025-03-18 02:02:01");
        let absurd = Wall {
            year: i32::MAX,
            month: 12,
            day: 31,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert_eq!(normalize(&absurd), NaiveDateTime::MAX);
    }

    #[test]
    fn conversation_dates_of_6_1() {
        assert_eq!(
            conversation_date(Some("2024-06-03 21:45:00"), UTC).as_deref(),
            Some("2024-06-03T21:45:00.000000Z")
        );
        assert_eq!(
            conversation_date(Some("2024-05-01 16:15:30"), Asia::Dhaka).as_deref(),
            Some("2024-05-01T10:15:30.000000Z")
        );
        assert_eq!(
            conversation_date(Some("0000-00-00 00:00:00"), UTC).as_deref(),
            Some("-000001-11-30T00:00:00.000000Z")
        );
        assert_eq!(
            conversation_date(Some("2024-05-12 08:20:00"), UTC).as_deref(),
            Some("2024-05-12T08:20:00.000000Z")
        );
        assert_eq!(conversation_date(None, UTC), None);
        assert_eq!(conversation_date(Some("garbage"), UTC), None);
        // Crossing the year 9999 boundary switches to the six-digit signed form.
        assert_eq!(
            conversation_date(Some("9999-12-31 23:00:00"), America::New_York).as_deref(),
            Some("+010000-01-01T04:00:00.000000Z")
        );
    }

    #[test]
    fn dst_ambiguous_takes_first_occurrence() {
        // Berlin 2024-10-27: 03:00 CEST → 02:00 CET; 02:30 occurs twice, first at +02:00.
        assert_eq!(
            local_to_utc(dt("2024-10-27 02:30:00"), Europe::Berlin),
            dt("2024-10-27 00:30:00")
        );
        // New York 2024-11-03: 01:30 EDT (-04:00) comes first.
        assert_eq!(
            local_to_utc(dt("2024-11-03 01:30:00"), America::New_York),
            dt("2024-11-03 05:30:00")
        );
        // Just outside the fold: unambiguous.
        assert_eq!(
            local_to_utc(dt("2024-10-27 03:00:00"), Europe::Berlin),
            dt("2024-10-27 02:00:00")
        );
    }

    #[test]
    fn dst_gap_moves_forward_by_the_gap() {
        // Berlin 2024-03-31: 02:00 CET → 03:00 CEST; 02:30 becomes 03:30 CEST = 01:30 UTC.
        assert_eq!(
            local_to_utc(dt("2024-03-31 02:30:00"), Europe::Berlin),
            dt("2024-03-31 01:30:00")
        );
        assert_eq!(
            local_to_utc(dt("2024-03-31 02:00:00"), Europe::Berlin),
            dt("2024-03-31 01:00:00")
        );
        assert_eq!(
            local_to_utc(dt("2024-03-31 03:00:00"), Europe::Berlin),
            dt("2024-03-31 01:00:00")
        );
        // New York 2024-03-10 02:30 → 03:30 EDT = 07:30 UTC.
        assert_eq!(
            local_to_utc(dt("2024-03-10 02:30:00"), America::New_York),
            dt("2024-03-10 07:30:00")
        );
        // Lord Howe: 30-minute gap 02:00 → 02:30 (+10:30 → +11:00).
        assert_eq!(
            local_to_utc(dt("2024-10-06 02:15:00"), Australia::Lord_Howe),
            dt("2024-10-05 15:45:00")
        );
        // Apia skipped 2011-12-30 entirely (-10:00 → +14:00): noon becomes noon on the 31st.
        assert_eq!(
            local_to_utc(dt("2011-12-30 12:00:00"), Pacific::Apia),
            dt("2011-12-30 22:00:00")
        );
        assert_eq!(
            conversation_date(Some("2024-03-31 02:30:00"), Europe::Berlin).as_deref(),
            Some("2024-03-31T01:30:00.000000Z")
        );
    }

    fn md(year: &str, month: &str, dom: &str, date: &str, time: &str) -> MessageDate {
        MessageDate {
            year: year.into(),
            month: month.into(),
            day_of_month: dom.into(),
            date: date.into(),
            time: time.into(),
        }
    }

    #[test]
    fn message_dates_of_6_2() {
        assert_eq!(
            message_date("2024-05-01 13:45:00"),
            md("2024", "05", "01-May", "May 01, 2024", "01:45 pm")
        );
        assert_eq!(message_date("2024-05-01 00:05:09").time, "12:05 am");
        assert_eq!(message_date("2024-05-01 12:00:00").time, "12:00 pm");
        assert_eq!(message_date("2024-05-01 11:59:59").time, "11:59 am");
        assert_eq!(message_date("2024-05-01 23:59:00").time, "11:59 pm");
        let d = message_date("2024-12-09 08:00:00");
        assert_eq!(d.day_of_month, "09-Dec");
        assert_eq!(d.date, "December 09, 2024");
        assert_eq!(d.month, "12");
        assert_eq!(
            message_date("2024-05-10 14:30:00"),
            md("2024", "05", "10-May", "May 10, 2024", "02:30 pm")
        );
        let zero = md("-0001", "11", "30-Nov", "November 30, -0001", "12:00 am");
        assert_eq!(message_date("0000-00-00 00:00:00"), zero);
        assert_eq!(message_date("not a date"), zero);
        assert_eq!(message_date("2024-09-05 00:00:00").day_of_month, "05-Sep");
    }

    #[test]
    fn wall_formatting() {
        assert_eq!(
            format_wall(dt("2024-01-02 03:04:05")),
            "2024-01-02 03:04:05"
        );
        assert_eq!(
            format_wall(
                NaiveDate::from_ymd_opt(-1, 11, 30)
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
            ),
            "-0001-11-30 00:00:00"
        );
        let now = format_wall(now_naive(Asia::Dhaka));
        assert!(parse_wall(&now).is_some(), "{now}");
    }

    #[test]
    fn year_formats() {
        assert_eq!(php_year(-1), "-0001");
        assert_eq!(php_year(0), "0000");
        assert_eq!(php_year(12345), "12345");
        assert_eq!(iso_year(-1), "-000001");
        assert_eq!(iso_year(0), "0000");
        assert_eq!(iso_year(9999), "9999");
        assert_eq!(iso_year(10000), "+010000");
    }
}
