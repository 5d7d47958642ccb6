//! Points in time for certificate validity: RFC 3339 timestamps in and out, through
//! `chrono`.

use chrono::format::ParseErrorKind;
use chrono::{DateTime, SecondsFormat, Utc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a timestamp cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimeError {
    /// Not `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    #[error("{text:?} is not an RFC 3339 time such as 2024-05-01T12:00:00Z")]
    Syntax {
        /// The text given.
        text: String,
    },
    /// A field out of range (month 13, 25 o'clock, February 30, ...).
    #[error("{text:?} is not a valid date and time")]
    Range {
        /// The text given.
        text: String,
    },
    /// Before the Unix epoch. (RFC 3339 has four-digit years: after 9999 is a syntax
    /// error.)
    #[error(
        "{text:?} is before 1970 ({utc} in UTC): the time must be 1970-01-01T00:00:00Z \
         or later"
    )]
    Before1970 {
        /// The text given.
        text: String,
        /// The same time in UTC, RFC 3339.
        utc: String,
    },
}

/// Parse an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, `2024-05-01t12:00:00.5+02:00`;
/// a space may stand for the `T`). Fractions of a second are dropped.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, TimeError> {
    let owned = || text.to_owned();
    let t = DateTime::parse_from_rfc3339(text.trim()).map_err(|e| match e.kind() {
        ParseErrorKind::OutOfRange | ParseErrorKind::Impossible => {
            TimeError::Range { text: owned() }
        }
        _ => TimeError::Syntax { text: owned() },
    })?;
    u64::try_from(t.timestamp())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .map_err(|_| TimeError::Before1970 {
            text: owned(),
            utc: t
                .with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        })
}

/// A time as RFC 3339 in UTC, to the second (`2024-05-01T12:00:00Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    match secs.and_then(|s| DateTime::<Utc>::from_timestamp(s, 0)) {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => format!("{} seconds after 1970-01-01T00:00:00Z", d.as_secs()),
            Err(_) => "a time before 1970".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> u64 {
        parse_rfc3339(text)
            .expect("valid time")
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    #[test]
    fn times_beyond_the_calendar_read_as_words() {
        let far = UNIX_EPOCH + Duration::from_secs(1 << 60);
        assert_eq!(
            format_rfc3339(far),
            format!("{} seconds after 1970-01-01T00:00:00Z", 1u64 << 60)
        );
        if let Some(before) = UNIX_EPOCH.checked_sub(Duration::from_secs(1)) {
            assert_eq!(format_rfc3339(before), "a time before 1970");
        }
    }

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), 0);
        assert_eq!(secs("2023-07-01T00:00:00Z"), 1_688_169_600);
        assert_eq!(secs("2023-07-01t02:00:00.999+02:00"), 1_688_169_600);
        assert_eq!(secs("2023-06-30 23:30:00-00:30"), 1_688_169_600);
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(1_688_169_600)),
            "2023-07-01T00:00:00Z"
        );
    }

    #[test]
    fn refuses_malformed_and_out_of_range() {
        for bad in [
            "",
            "2023-07-01",
            "2023-07-01T00:00:00",
            "2023-07-01T00:00:00.Z",
            "2023/07/01T00:00:00Z",
            "２023-07-01T00:00:00Z",
            "2023-07-01T00:00:00+0200",
        ] {
            assert!(
                matches!(parse_rfc3339(bad), Err(TimeError::Syntax { .. })),
                "{bad}"
            );
        }
        for bad in [
            "2023-02-30T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:00:00+24:00",
        ] {
            assert!(
                matches!(parse_rfc3339(bad), Err(TimeError::Range { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn times_before_1970_are_refused_as_such() {
        // These once read "is not a valid date and time".
        for (text, utc) in [
            ("1969-12-31T23:59:59Z", "1969-12-31T23:59:59Z"),
            ("1900-01-01T00:00:00Z", "1900-01-01T00:00:00Z"),
            ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"),
            // 1970 in its own time zone, 1969 in UTC.
            ("1970-01-01T00:00:00+01:00", "1969-12-31T23:00:00Z"),
        ] {
            let e = parse_rfc3339(text).expect_err("before 1970");
            assert_eq!(
                e,
                TimeError::Before1970 {
                    text: text.to_owned(),
                    utc: utc.to_owned()
                }
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "{text:?} is before 1970 ({utc} in UTC): the time must be \
                     1970-01-01T00:00:00Z or later"
                )
            );
        }
        assert_eq!(secs("1970-01-01T01:00:00+01:00"), 0);
    }
}
