//! How a live pull of one entity set proceeds: where it starts (in full, from the stored delta
//! link, or from the `modifiedon` watermark), what it does when Dataverse refuses the query,
//! and whether what it read was a complete snapshot. Pure decisions, typed, so that `cmd/pull`
//! only carries them out.

use super::webapi::Rejected;
use crate::stage::PullState;

/// Overlap for watermark pulls: `modifiedon` has one-second resolution.
const WATERMARK_OVERLAP_SECS: i64 = 5;
/// Before every date Dataverse stores: a watermark pull from here reads everything.
pub(crate) const DATAVERSE_MIN_DATE: &str = "1753-01-01T00:00:00Z";
/// The optional scope column (PRODUCT.md section 1): an org without it has every record in scope.
const SYNC_COLUMN: &str = "new_synctomkto";

/// Where a query starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// Every record, with change tracking requested (the last page carries a delta link).
    Full,
    /// The changes since a stored `@odata.deltaLink`.
    Delta(String),
    /// Records modified after the watermark (change tracking off), oldest first.
    Since(String),
}

impl Start {
    /// Where the pull of an entity set starts: in full when asked or when nothing is stored,
    /// else from the stored delta link or watermark.
    pub(crate) fn from_state(state: Option<&PullState>, full: bool, has_modifiedon: bool) -> Start {
        match state {
            _ if full => Start::Full,
            Some(PullState {
                mode,
                delta_link: Some(link),
                ..
            }) if mode == "change_tracking" => Start::Delta(link.clone()),
            Some(PullState {
                mode,
                watermark: Some(mark),
                ..
            }) if mode == "watermark" && has_modifiedon => Start::Since(overlap(mark)),
            _ => Start::Full,
        }
    }

    /// Whether a query from here reads the whole table, so that what it lacks was deleted.
    pub(crate) fn is_complete(&self) -> bool {
        match self {
            Start::Full => true,
            Start::Since(mark) => mark == DATAVERSE_MIN_DATE,
            Start::Delta(_) => false,
        }
    }

    /// How the output says what was read.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Start::Full => "full",
            Start::Delta(_) => "changes since the last pull",
            Start::Since(_) => "modified since the last pull",
        }
    }
}

/// What to do after Dataverse refused a query (a 4xx other than 401, 403, 404 and 429).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// The stored delta link was refused (expired, or the table was reset): read in full.
    Full,
    /// The org has no such column: select without it (every record is then in scope).
    WithoutColumn(&'static str),
    /// Change tracking is off for the table: read by `modifiedon` from the beginning.
    Watermark,
}

impl Fallback {
    /// Judges a refusal of a query from `start` that selected `columns`; `None` means there is
    /// nothing else to try and the pull fails with Dataverse's answer.
    pub(crate) fn after(
        rejected: &Rejected,
        start: &Start,
        columns: &[&str],
        has_modifiedon: bool,
    ) -> Option<Fallback> {
        if matches!(start, Start::Delta(_)) {
            return Some(Fallback::Full);
        }
        if rejected.message.contains(SYNC_COLUMN) && columns.contains(&SYNC_COLUMN) {
            return Some(Fallback::WithoutColumn(SYNC_COLUMN));
        }
        let no_tracking = rejected
            .message
            .to_ascii_lowercase()
            .contains("change tracking");
        if matches!(start, Start::Full) && no_tracking && has_modifiedon {
            return Some(Fallback::Watermark);
        }
        None
    }

    /// The start a retry takes.
    pub(crate) fn start(&self, previous: &Start) -> Start {
        match self {
            Fallback::Full => Start::Full,
            Fallback::WithoutColumn(_) => previous.clone(),
            Fallback::Watermark => Start::Since(DATAVERSE_MIN_DATE.to_string()),
        }
    }
}

/// The watermark minus the overlap, in the form Dataverse filters take; an unreadable stored
/// watermark reads from the beginning.
pub(crate) fn overlap(mark: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(mark)
        .ok()
        .and_then(|t| t.checked_sub_signed(chrono::Duration::seconds(WATERMARK_OVERLAP_SECS)))
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_else(|| DATAVERSE_MIN_DATE.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(mode: &str, link: Option<&str>, mark: Option<&str>) -> PullState {
        PullState {
            mode: mode.to_string(),
            delta_link: link.map(str::to_string),
            watermark: mark.map(str::to_string),
        }
    }

    fn refused(message: &str) -> Rejected {
        Rejected {
            status: 400,
            code: "0x80040203".into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_pull_starts_from_what_is_stored_unless_full() {
        let tracked = state(
            "change_tracking",
            Some("https://x/api/data/v9.2/a?d=1"),
            None,
        );
        let marked = state("watermark", None, Some("2025-01-01T00:00:10Z"));
        assert_eq!(Start::from_state(None, false, true), Start::Full);
        assert_eq!(
            Start::from_state(Some(&tracked), false, true),
            Start::Delta("https://x/api/data/v9.2/a?d=1".into())
        );
        assert_eq!(Start::from_state(Some(&tracked), true, true), Start::Full);
        assert_eq!(
            Start::from_state(Some(&marked), false, true),
            Start::Since("2025-01-01T00:00:05Z".into())
        );
        assert_eq!(
            Start::from_state(Some(&marked), false, false),
            Start::Full,
            "no modifiedon: no watermark"
        );
    }

    #[test]
    fn refusals_fall_back_in_the_documented_order() {
        let columns = ["name", "new_synctomkto"];
        let delta = Start::Delta("d".into());
        assert_eq!(
            Fallback::after(&refused("anything"), &delta, &columns, true),
            Some(Fallback::Full)
        );
        let missing = refused("Could not find a property named 'new_synctomkto' on type");
        assert_eq!(
            Fallback::after(&missing, &Start::Full, &columns, true),
            Some(Fallback::WithoutColumn("new_synctomkto"))
        );
        assert_eq!(
            Fallback::after(&missing, &Start::Full, &["name"], true),
            None,
            "already dropped: nothing left to try"
        );
        let off = refused("Change Tracking is not enabled for entity 'connectionrole'");
        assert_eq!(
            Fallback::after(&off, &Start::Full, &columns, true),
            Some(Fallback::Watermark)
        );
        assert_eq!(Fallback::after(&off, &Start::Full, &columns, false), None);
        assert_eq!(
            Fallback::Watermark.start(&Start::Full),
            Start::Since(DATAVERSE_MIN_DATE.into())
        );
        assert!(Fallback::Watermark.start(&Start::Full).is_complete());
        assert!(!Start::Since("2025-01-01T00:00:00Z".into()).is_complete());
    }

    #[test]
    fn an_unreadable_or_extreme_watermark_reads_from_the_beginning() {
        assert_eq!(overlap("yesterday"), DATAVERSE_MIN_DATE);
        assert_eq!(overlap("-262143-01-01T00:00:00Z"), DATAVERSE_MIN_DATE);
    }
}
