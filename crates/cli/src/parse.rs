//! Parsers for positions, ids and times given on the command line.

use std::time::SystemTime;

use tributary::{EntryId, Position};

/// An RFC 3339 time.
pub(crate) fn time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s).map_err(|e| format!("`{s}` is not an RFC 3339 time ({e})"))
}

/// `$`, `0`, an entry id or an RFC 3339 time.
pub(crate) fn position(s: &str) -> Result<Position, String> {
    match s {
        "$" => Ok(Position::End),
        "0" | "0-0" | "-" => Ok(Position::Beginning),
        _ => match s.parse::<EntryId>() {
            Ok(id) => Ok(Position::At(id)),
            Err(_) => time(s)
                .map(Position::Time)
                .map_err(|_| format!("`{s}` is not `$`, `0`, an entry id or an RFC 3339 time")),
        },
    }
}

/// An entry id or an RFC 3339 time (its first id).
pub(crate) fn entry_id_or_time(s: &str) -> Result<EntryId, String> {
    s.parse::<EntryId>()
        .or_else(|_| time(s).map(EntryId::from_time))
        .map_err(|_| format!("`{s}` is not an entry id or an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(position("$").unwrap(), Position::End);
        assert_eq!(position("0").unwrap(), Position::Beginning);
        assert_eq!(position("12-3").unwrap(), Position::At(EntryId::new(12, 3)));
        assert!(matches!(position("2026-01-01T00:00:00Z").unwrap(), Position::Time(_)));
        assert!(position("yesterday").is_err());
        assert_eq!(entry_id_or_time("1970-01-01T00:00:01Z").unwrap(), EntryId::new(1000, 0));
    }
}
