//! Positions in a stream: where a group starts, where a replay begins and ends.

use std::time::SystemTime;

use tributary_core::EntryId;

/// A place in a topic's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The oldest entry still retained.
    Beginning,
    /// After the newest entry: only entries added from now on.
    End,
    /// The entry with this id (inclusive).
    At(EntryId),
    /// The first entry added at or after this time (inclusive; by Redis' clock).
    Time(SystemTime),
}

impl Position {
    /// The id to give `XGROUP CREATE` / `XGROUP SETID`, which take the last id *already*
    /// delivered: the group's next read returns the entries after it.
    pub(crate) fn group_cursor(&self) -> String {
        match self {
            Self::Beginning => "0".to_owned(),
            Self::End => "$".to_owned(),
            Self::At(id) => id.predecessor().to_string(),
            Self::Time(t) => EntryId::from_time(*t).predecessor().to_string(),
        }
    }

    /// As the start of an `XRANGE` (inclusive).
    pub(crate) fn range_start(&self) -> String {
        match self {
            Self::Beginning => "-".to_owned(),
            Self::End => "+".to_owned(),
            Self::At(id) => id.to_string(),
            Self::Time(t) => EntryId::from_time(*t).to_string(),
        }
    }

    /// As the end of an `XRANGE` (inclusive; a time includes its whole millisecond).
    pub(crate) fn range_end(&self) -> String {
        match self {
            Self::Beginning => "-".to_owned(),
            Self::End => "+".to_owned(),
            Self::At(id) => id.to_string(),
            Self::Time(t) => EntryId::from_time(*t).ms().to_string(),
        }
    }
}

impl From<EntryId> for Position {
    fn from(id: EntryId) -> Self {
        Self::At(id)
    }
}

impl From<SystemTime> for Position {
    fn from(t: SystemTime) -> Self {
        Self::Time(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn group_cursor_is_the_id_before_the_first_wanted_entry() {
        assert_eq!(Position::Beginning.group_cursor(), "0");
        assert_eq!(Position::End.group_cursor(), "$");
        assert_eq!(Position::At(EntryId::new(10, 2)).group_cursor(), "10-1");
        let t = UNIX_EPOCH + Duration::from_millis(1000);
        assert_eq!(Position::Time(t).group_cursor(), format!("999-{}", u64::MAX));
        assert_eq!(Position::Time(t).range_start(), "1000-0");
        assert_eq!(Position::Time(t).range_end(), "1000");
    }
}
