//! Logging: one line per event on stderr, each with a UTC timestamp.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 0 quiet (errors only), 1 normal, 2 verbose.
static LEVEL: AtomicU8 = AtomicU8::new(1);

pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

pub fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// Writes one log line if `level` is enabled. Use the `info!`, `warn!` and `debug!` macros.
pub fn line(level: u8, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Built in one buffer sized for a usual line, not grown a piece at a time.
    let mut msg = String::with_capacity(192);
    use std::fmt::Write as _;
    let _ = write_timestamp(&mut msg, now.as_secs() as i64, now.subsec_millis());
    let _ = write!(msg, " {args}");
    // One line per event, whatever the names in it hold (a peer's name with a newline would
    // forge a line of its own).
    if msg.contains(|c: char| c.is_control()) {
        msg = escape_controls(&msg).into_owned();
    }
    msg.push('\n');
    // One write call per line keeps lines whole when several threads log at once.
    use std::io::Write;
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

/// `s` with its control characters (a newline in a file name, an escape sequence) written as
/// `\n`, `\t` or `\u{..}`, so that a line of the log or of the status stays one line.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(|c: char| c.is_control()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Lets one kind of line through at most `burst` times per interval and counts the ones held
/// back: what strangers and hostile peers cause (refused connections, failed handshakes,
/// entries refused one by one) cannot fill a log kept in RAM.
pub struct Throttle {
    every: std::time::Duration,
    burst: u32,
    /// When the current interval began, lines let through in it, lines held back since the
    /// last one let through.
    state: std::sync::Mutex<(Option<std::time::Instant>, u32, u64)>,
}

impl Throttle {
    pub const fn new(every: std::time::Duration, burst: u32) -> Throttle {
        Throttle {
            every,
            burst,
            state: std::sync::Mutex::new((None, 0, 0)),
        }
    }

    /// Whether a line may go out now: then what to add to it, the count held back since the
    /// last one ("" if none).
    pub fn pass(&self) -> Option<String> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if g.0.is_none_or(|t| now.duration_since(t) >= self.every) {
            g.0 = Some(now);
            g.1 = 0;
        }
        if g.1 >= self.burst {
            g.2 += 1;
            return None;
        }
        g.1 += 1;
        let held = std::mem::take(&mut g.2);
        Some(if held > 0 {
            format!(" ({held} more like it not logged)")
        } else {
            String::new()
        })
    }
}

/// Writes to stdout, ignoring a closed pipe (`left status | head` must not abort).
pub fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
    let _ = std::io::stdout().flush();
}

/// Writes one line to stderr, ignoring errors.
pub fn err(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{text}\n").as_bytes());
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn timestamp(secs: i64, millis: u32) -> String {
    let mut out = String::with_capacity(24);
    let _ = write_timestamp(&mut out, secs, millis);
    out
}

fn write_timestamp(out: &mut impl std::fmt::Write, secs: i64, millis: u32) -> std::fmt::Result {
    let (y, mo, d, h, mi, s) = civil(secs);
    write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z"
    )
}

/// Splits seconds since the epoch into UTC (year, month, day, hour, minute, second).
pub fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::line(1, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::line(0, format_args!($($t)*)) };
}

#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::line(2, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(
            escape_controls("a b/c.txt"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("big\nstate: in sync\tx\u{1b}[2J"),
            "big\\nstate: in sync\\tx\\u{1b}[2J"
        );
    }

    #[test]
    fn a_throttle_lets_a_burst_through_and_counts_the_rest() {
        let t = Throttle::new(std::time::Duration::from_millis(200), 2);
        assert_eq!(t.pass().as_deref(), Some(""));
        assert_eq!(t.pass().as_deref(), Some(""));
        assert!(t.pass().is_none() && t.pass().is_none());
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(t.pass().as_deref(), Some(" (2 more like it not logged)"));
        assert_eq!(t.pass().as_deref(), Some(""));
        assert!(t.pass().is_none());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(timestamp(1_795_622_625, 123), "2026-11-25T16:03:45.123Z");
        assert_eq!(civil(-1), (1969, 12, 31, 23, 59, 59));
    }
}
