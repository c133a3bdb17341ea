//! The access line, one per request (src/http/pipeline.rs), written straight into the log's
//! buffer in the text format's own bytes.
//!
//! Why: tracing-subscriber's text format (`Format<Full>`) spent about 11,800 instructions on
//! this line, 18 % of a poll answered without a statement (bench/RESULTS-instructions.md as
//! of commit 23e8694, 2026-12-06; this writer spends about 4,100): every field name and `=`
//! goes through an ANSI style's `Display` even with colours off, the timestamp through
//! `write!` per part. Operators parse these lines, so the bytes stay exactly what that format
//! writes; only this one callsite is written here, and only in plain text without a span
//! around it. Every other line, a terminal's coloured output and the JSON format stay
//! tracing-subscriber's.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::{self, FormatTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The access line's target: the pipeline's module path, which the line always had.
const TARGET: &str = "shopchat::http::pipeline";
/// A field only the access line has.
const MARKER_FIELD: &str = "latency_ms";

/// Logs the access line of one answered request at INFO.
pub fn request(
    method: &Method,
    route: &str,
    status: u16,
    elapsed: Duration,
    user_id: Option<i64>,
    request_id: &str,
) {
    tracing::info!(
        target: TARGET,
        method = %method,
        route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        user_id,
        request_id = %request_id,
        "request"
    );
}

/// The text format: tracing-subscriber's `Format<Full>`, with the access line written here.
#[derive(Default)]
pub struct TextFormat {
    full: Format<Full, time::SystemTime>,
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // A span around the line would be printed before the target: left to the full format.
        if !is_access_line(meta) || writer.has_ansi_escapes() || ctx.event_scope().is_some() {
            return self.full.format_event(ctx, writer, event);
        }
        // `Format<Full>`: the timestamp and a space, the level padded to 5 and a space, the
        // target, `: `, the fields separated by spaces, a newline.
        match rfc3339_micros(SystemTime::now()) {
            Some(stamp) => writer.write_str(stamp.as_str())?,
            None => {
                time::SystemTime.format_time(&mut writer)?;
                writer.write_char(' ')?;
            }
        }
        writer.write_str(match *meta.level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            Level::ERROR => "ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = PlainFields {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Only the event of [`request`]: its target, its module and its marker field. Another event
/// with the same target and a `latency_ms` field (from another module) keeps the full format.
fn is_access_line(meta: &Metadata<'_>) -> bool {
    meta.target() == TARGET
        && meta.module_path() == Some(module_path!())
        && meta.fields().field(MARKER_FIELD).is_some()
}

/// The fields as tracing-subscriber's default visitor writes them without colours: the message
/// bare, every other field `name=` and its `Debug`, strings quoted. Exact for the access line,
/// whose message is a literal and whose names have no `r#` prefix.
struct PlainFields<'w, 'a> {
    writer: &'w mut Writer<'a>,
    result: fmt::Result,
    first: bool,
}

impl PlainFields<'_, '_> {
    /// The separator before a field, and its `name=` (nothing for the message).
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }

    fn record(&mut self, field: &Field, write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.start(field).and_then(|()| write(self.writer));
        }
    }
}

impl Visit for PlainFields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, |w| write!(w, "{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // `Debug` of a str: quoted, escaped. Printable ASCII without `"` or `\` is itself.
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        if field.name() == "message" {
            // Bare, as the full format writes a message. Only the access line comes here
            // (`is_access_line`), whose message is the literal "request": the full format's
            // escaping of control characters in messages is not repeated here.
            self.record(field, |w| w.write_str(value));
        } else if plain {
            self.record(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.record(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
}

/// A timestamp as the text format writes it: `2026-12-06T07:22:16.005527Z ` (UTC, microseconds,
/// truncated; the trailing space separates it from the level). `None` outside years
/// 1970–9999, which the full format's own writer handles.
fn rfc3339_micros(t: SystemTime) -> Option<Stamp> {
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    // 9999-12-31T23:59:59Z
    if secs > 253_402_300_799 {
        return None;
    }
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let mut out = Stamp([0; 28]);
    let b = &mut out.0;
    put_digits(&mut b[0..4], year as u64);
    b[4] = b'-';
    put_digits(&mut b[5..7], month as u64);
    b[7] = b'-';
    put_digits(&mut b[8..10], day as u64);
    b[10] = b'T';
    put_digits(&mut b[11..13], of_day / 3600);
    b[13] = b':';
    put_digits(&mut b[14..16], of_day / 60 % 60);
    b[16] = b':';
    put_digits(&mut b[17..19], of_day % 60);
    b[19] = b'.';
    put_digits(&mut b[20..26], u64::from(since.subsec_micros()));
    b[26] = b'Z';
    b[27] = b' ';
    Some(out)
}

/// The 28 ASCII bytes of a timestamp and its space.
struct Stamp([u8; 28]);

impl Stamp {
    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `n` in decimal, zero-padded to fill `out`.
fn put_digits(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, SecondsFormat, Utc};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The lines `emit` logs through [`TextFormat`] (timestamps cut off, after checking they
    /// are the time of logging) and through tracing-subscriber's own text format without time.
    fn both(emit: impl Fn()) -> (String, String) {
        let ours = Captured::default();
        let theirs = Captured::default();
        let before = SystemTime::now();
        tracing::subscriber::with_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(ours.clone())
                .event_format(TextFormat::default())
                .finish(),
            &emit,
        );
        let after = SystemTime::now();
        tracing::subscriber::with_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .without_time()
                .with_writer(theirs.clone())
                .finish(),
            &emit,
        );
        let mut cut = String::new();
        for line in ours.text().lines() {
            let (stamp, rest) = line.split_at(28);
            let at: DateTime<Utc> = stamp.trim_end().parse().unwrap();
            let at = SystemTime::from(at);
            // The stamp truncates to microseconds.
            assert!(
                at + Duration::from_micros(1) >= before && at <= after,
                "{stamp}"
            );
            cut.push_str(rest);
            cut.push('\n');
        }
        (cut, theirs.text())
    }

    #[test]
    fn the_access_line_has_the_text_formats_bytes() {
        let (ours, theirs) = both(|| {
            let get = Method::GET;
            let purge = Method::from_bytes(b"PURGE").unwrap();
            request(
                &get,
                "get-new-messages",
                200,
                Duration::from_micros(1_234),
                Some(5),
                "0bd9df80cfda9c02f9e061e9d47b7d65",
            );
            request(
                &get,
                "health",
                200,
                Duration::from_nanos(17_588_632),
                None,
                "r.1_x-Y",
            );
            request(
                &purge,
                "not-found",
                404,
                Duration::ZERO,
                Some(i64::MAX),
                "a",
            );
            request(
                &get,
                "conversations",
                503,
                Duration::from_nanos(157_365_513),
                Some(0),
                "b",
            );
            request(
                &get,
                "x",
                500,
                Duration::from_secs(u64::MAX / 4),
                Some(1),
                "c",
            );
            request(&get, "x", 500, Duration::from_nanos(1), Some(-1), "c");
            // Not a route name the pipeline has: the escaped `Debug` of a str.
            request(
                &get,
                "a \"quoted\" \\ \u{1b}[31m é\n",
                200,
                Duration::from_millis(5),
                Some(1),
                "d",
            );
        });
        assert_eq!(ours.lines().count(), 7);
        assert_eq!(ours, theirs);
        assert!(ours.starts_with(" INFO shopchat::http::pipeline: request method=GET route=\"get-new-messages\" status=200 latency_ms=1.234 user_id=5 request_id=0bd9df80cfda9c02f9e061e9d47b7d65\n"), "{ours}");
    }

    #[test]
    fn other_lines_are_the_full_formats() {
        let (ours, theirs) = both(|| {
            tracing::warn!(target: TARGET, error = %"pool timed out", attempts = 3, "slow");
            tracing::info!(n = 1, "elsewhere");
            // The access line's target and marker field from another module: the full format,
            // which escapes the control characters of a message.
            tracing::info!(target: TARGET, latency_ms = 1.5, "\u{1b}[31mred");
            let span = tracing::info_span!("outer", id = 7);
            let _entered = span.enter();
            request(&Method::GET, "health", 200, Duration::ZERO, None, "e");
        });
        assert_eq!(ours.lines().count(), 4);
        assert_eq!(ours, theirs);
        assert!(!ours.contains('\u{1b}'), "{ours}");
        assert!(
            ours.contains("outer{id=7}: shopchat::http::pipeline: request"),
            "{ours}"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_in_microseconds() {
        let check = |secs: u64, nanos: u32| {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let expected = DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(rfc3339_micros(t).unwrap().as_str(), format!("{expected} "));
        };
        // Steps that fall on every month and time of day over the centuries.
        let mut secs: u64 = 0;
        while secs <= 253_402_300_799 {
            for nanos in [0, 5_527_000, 999_999_999] {
                check(secs, nanos);
            }
            secs += 86_400 * 61 + 3_607;
        }
        // Every day around the leap-year rules' turns (1972, 2000, 2100, 2400).
        for year_start in [
            0u64,
            946_684_800 - 400 * 86_400,
            4_102_444_800 - 400 * 86_400,
            13_569_465_600 - 400 * 86_400,
        ] {
            for day in 0..800 {
                check(year_start + day * 86_400 + 43_201, 1_000);
            }
        }
        let last = UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999);
        assert_eq!(
            rfc3339_micros(last).unwrap().as_str(),
            "9999-12-31T23:59:59.999999Z "
        );
        assert!(rfc3339_micros(last + Duration::from_secs(1)).is_none());
        assert!(rfc3339_micros(UNIX_EPOCH - Duration::from_secs(1)).is_none());
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
