//! Points in time on the command line: RFC 3339 (`2026-12-03T10:00:00Z`) or a span before
//! now (`90s`, `15m`, `2h`, `7d`).

use anyhow::Context as _;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Parses `text` as RFC 3339 or as a span before `now`.
pub fn parse(text: &str, now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().with_context(|| format!("{text:?} is neither RFC 3339 nor a span like 15m"))?;
    let span = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => anyhow::bail!("{text:?}: the unit of a span is s, m, h or d"),
    };
    Ok(now - span)
}

/// RFC 3339 text of `at`, for SQL parameters and output.
pub fn format(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Absolute times pass through, spans count back from now, and anything else is refused
    /// with the text named.
    #[test]
    fn times_and_spans_parse() {
        let now = OffsetDateTime::parse("2026-12-03T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(format(parse("2026-12-01T08:30:00Z", now).unwrap()), "2026-12-01T08:30:00Z");
        assert_eq!(format(parse("15m", now).unwrap()), "2026-12-03T11:45:00Z");
        assert_eq!(format(parse("2d", now).unwrap()), "2026-12-01T12:00:00Z");
        assert!(parse("15w", now).unwrap_err().to_string().contains("unit"));
        assert!(parse("yesterday", now).unwrap_err().to_string().contains("yesterday"));
    }
}
