//! Points in time for certificate validity: RFC 3339 timestamps in and out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use x509_cert::der::DateTime;

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
    /// Before 1970 or after 9999.
    #[error("{text:?} is outside the years 1970 to 9999")]
    Outside {
        /// The text given.
        text: String,
    },
}

/// Parse an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, `2024-05-01t12:00:00.5+02:00`;
/// a space may stand for the `T`). Fractions of a second are dropped.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, TimeError> {
    let syntax = || TimeError::Syntax {
        text: text.to_owned(),
    };
    let b = text.trim().as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(syntax());
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(syntax());
    }
    let year = digits(&b[0..4]).ok_or_else(syntax)?;
    let month = digits(&b[5..7]).ok_or_else(syntax)?;
    let day = digits(&b[8..10]).ok_or_else(syntax)?;
    let hour = digits(&b[11..13]).ok_or_else(syntax)?;
    let minute = digits(&b[14..16]).ok_or_else(syntax)?;
    let second = digits(&b[17..19]).ok_or_else(syntax)?;
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(syntax());
        }
        rest = &fraction[n..];
    }
    // Seconds east of UTC.
    let offset: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2]).ok_or_else(syntax)?;
            let m = digits(&[*m1, *m2]).ok_or_else(syntax)?;
            if h > 23 || m > 59 {
                return Err(TimeError::Range {
                    text: text.to_owned(),
                });
            }
            let secs = i64::from(h) * 3600 + i64::from(m) * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return Err(syntax()),
    };
    let to_u8 = |v: u16| u8::try_from(v).map_err(|_| syntax());
    let local = DateTime::new(
        year,
        to_u8(month)?,
        to_u8(day)?,
        to_u8(hour)?,
        to_u8(minute)?,
        to_u8(second)?,
    )
    .map_err(|_| TimeError::Range {
        text: text.to_owned(),
    })?;
    let local = i64::try_from(local.unix_duration().as_secs()).map_err(|_| syntax())?;
    let utc = u64::try_from(local - offset).map_err(|_| TimeError::Outside {
        text: text.to_owned(),
    })?;
    Ok(UNIX_EPOCH + Duration::from_secs(utc))
}

/// A time as RFC 3339 in UTC, to the second (`2024-05-01T12:00:00Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    match t
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| DateTime::from_unix_duration(Duration::from_secs(d.as_secs())).ok())
    {
        Some(dt) => dt.to_string(),
        None => format!("{t:?}"),
    }
}

fn digits(b: &[u8]) -> Option<u16> {
    b.iter().try_fold(0u16, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u16::from(c - b'0'))
    })
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
        assert!(matches!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            Err(TimeError::Range { .. } | TimeError::Outside { .. })
        ));
        assert!(matches!(
            parse_rfc3339("1970-01-01T00:00:00+01:00"),
            Err(TimeError::Outside { .. })
        ));
    }
}
