//! Per-object run reports, as AWS DataSync's task reports list them: every key of a run with
//! its outcome and reason, read from the run's per-key rows (the markers that count each key
//! once, and the rows of copies that failed an attempt and will retry). Paged by an opaque
//! cursor; filtered by outcome. Served as JSON Lines by `GET /api/runs/{id}/report` and
//! printed by `status RUN_ID --report [--csv]` (decisions 66).

use serde::Serialize;

use super::store::{valid_run_id, RunStore};
use crate::azure::table::Continuation;
use crate::error::{Error, Result};

/// A key's outcome in a report.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr, strum::EnumString, strum::VariantArray,
)]
#[serde(rename_all = "camelCase")]
#[strum(serialize_all = "camelCase")]
pub enum ReportOutcome {
    /// Left out by a filter, or a folder marker.
    Excluded,
    /// Cannot be copied (an archived class, a name Azure cannot hold).
    Unsupported,
    /// Failed for good (after the last attempt).
    Failed,
    /// Failed an attempt and will be tried again: not final.
    Retrying,
    /// The prune deleted its blob because the source is gone (mirror mode): the
    /// [`Tally::Pruned`](super::counters::Tally::Pruned) counter. Named `deleted`.
    #[serde(rename = "deleted")]
    #[strum(serialize = "deleted")]
    Pruned,
    /// Listed, then gone from the source before its copy.
    Vanished,
    /// Copied and verified.
    Transferred,
    /// Already at the target.
    NoTransferNeeded,
    /// Dry run: would be copied.
    WouldTransfer,
    /// Dry run: would be deleted.
    WouldDelete,
    /// Verify run: the source object has no blob.
    Missing,
    /// Verify run: a blob under the target prefix has no source object.
    Extra,
    /// Verify run: the sizes differ.
    SizeMismatch,
    /// Verify run: the blob holds another version of the object.
    ChecksumMismatch,
    /// Verify run: the blob's provenance, headers or metadata do not vouch for it.
    MetadataMismatch,
}

impl ReportOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: &'static [ReportOutcome] = <ReportOutcome as strum::VariantArray>::VARIANTS;

    /// What a report holds when no outcome is asked for: every key that was not copied.
    /// A verify run's lines are all differences, so they are in it too.
    pub const NOT_COPIED: [ReportOutcome; 12] = [
        ReportOutcome::Excluded,
        ReportOutcome::Unsupported,
        ReportOutcome::Failed,
        ReportOutcome::Retrying,
        ReportOutcome::Pruned,
        ReportOutcome::Vanished,
        ReportOutcome::WouldDelete,
        ReportOutcome::Missing,
        ReportOutcome::Extra,
        ReportOutcome::SizeMismatch,
        ReportOutcome::ChecksumMismatch,
        ReportOutcome::MetadataMismatch,
    ];

    /// The name in reports, filters and the run's counters (the counter's own name, or
    /// `retrying`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    fn from_name(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// The outcomes a caller asked for (`?outcome=` or `--outcome`): a comma-separated list,
/// `all`, or nothing (every key that was not copied). An unknown name is an error that
/// lists the known ones.
pub fn parse_outcomes(s: Option<&str>) -> Result<Vec<ReportOutcome>> {
    let s = s.map(str::trim).unwrap_or("");
    if s.is_empty() {
        return Ok(ReportOutcome::NOT_COPIED.to_vec());
    }
    if s == "all" {
        return Ok(ReportOutcome::ALL.to_vec());
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let o = ReportOutcome::from_name(part).ok_or_else(|| {
            let known: Vec<&str> = ReportOutcome::ALL.iter().map(|o| o.name()).collect();
            Error::invalid(format!(
                "`{part}` is not an outcome; use one or more of {}, separated by commas, or `all`",
                known.join(", ")
            ))
        })?;
        if !out.contains(&o) {
            out.push(o);
        }
    }
    Ok(out)
}

/// One key of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportLine {
    /// The source key.
    pub key: String,
    /// What happened to it.
    pub outcome: ReportOutcome,
    /// Its bytes (0 where nothing was read).
    pub bytes: u64,
    /// Why, where there is a reason (redacted, at most 1,000 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `retrying`: the attempt that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// One page of a report.
#[derive(Debug, Clone, Default)]
pub struct ReportPage {
    /// Its lines, in the table's order (by shard, then by key hash).
    pub lines: Vec<ReportLine>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// The largest page a caller may ask for.
pub const MAX_PAGE: u32 = 5000;

/// Up to `limit` lines of run `id`'s report with `outcomes`, from `cursor` (a page's
/// `next`). A `retrying` key whose final outcome was counted since is left out: the report
/// shows each key's latest state.
pub async fn report_page(
    store: &RunStore,
    id: &str,
    outcomes: &[ReportOutcome],
    limit: u32,
    cursor: Option<&str>,
) -> Result<ReportPage> {
    if !valid_run_id(id) {
        return Err(Error::invalid(format!("`{id}` is not a run id")));
    }
    let mut from = match cursor.filter(|c| !c.is_empty()) {
        Some(c) => Some(
            Continuation::decode(c)
                .ok_or_else(|| Error::invalid("cursor: not a cursor this report gave; start again without it"))?,
        ),
        None => None,
    };
    if outcomes.is_empty() {
        return Ok(ReportPage::default());
    }
    // Names are from a closed set, so they need no quoting beyond the literal's.
    let wanted: Vec<String> = outcomes.iter().map(|o| format!("Tally eq '{}'", o.name())).collect();
    let filter = format!(
        "PartitionKey ge '{id}~' and PartitionKey lt '{id}~~' and ({})",
        wanted.join(" or ")
    );
    let limit = limit.clamp(1, MAX_PAGE);
    let table = store.table();
    let mut page = ReportPage::default();
    loop {
        let want = limit - page.lines.len() as u32;
        let (rows, next) = table.query(Some(&filter), Some(want), from.as_ref()).await?;
        for e in rows {
            let Some(outcome) = e.get_str("Tally").and_then(ReportOutcome::from_name) else {
                continue;
            };
            if outcome == ReportOutcome::Retrying {
                // Settled since: its marker (same hash, `o` for `r`) tells the final outcome.
                let marker = format!("o{}", e.row_key.trim_start_matches('r'));
                if table.get(&e.partition_key, &marker).await?.is_some() {
                    continue;
                }
            }
            page.lines.push(ReportLine {
                key: e.get_str("Key").unwrap_or_default().to_string(),
                outcome,
                bytes: e.get_i64("Bytes").unwrap_or(0).max(0) as u64,
                reason: e.get_str("Reason").map(str::to_string),
                attempt: e.get_i64("Attempt").map(|a| a.max(0) as u32),
            });
        }
        from = next;
        if from.is_none() || page.lines.len() as u32 >= limit {
            break;
        }
    }
    page.next = from.map(|c| c.encode());
    Ok(page)
}

/// The CSV header of [`csv_line`].
pub const CSV_HEADER: &str = "key,outcome,bytes,reason,attempt";

/// One report line as CSV (RFC 4180 quoting). A key or reason that a spreadsheet would read
/// as a formula (it starts with `=`, `+`, `-`, `@`, a tab, a carriage return or a NUL) is
/// written with a leading `'` and quoted, as OWASP's guidance on CSV injection says; the JSON
/// Lines report keeps every key exactly as it is.
pub fn csv_line(l: &ReportLine) -> String {
    format!(
        "{},{},{},{},{}",
        csv_cell(&l.key),
        l.outcome.name(),
        l.bytes,
        csv_cell(l.reason.as_deref().unwrap_or("")),
        l.attempt.map(|a| a.to_string()).unwrap_or_default()
    )
}

/// One CSV cell of outside text: quoted when it holds a separator, a quote or a line break,
/// and defused when a spreadsheet would evaluate it.
fn csv_cell(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r', '\0']);
    if formula {
        format!("\"'{}\"", s.replace('"', "\"\""))
    } else if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_parse_by_name_and_unknown_ones_are_named() {
        assert_eq!(parse_outcomes(None).unwrap(), ReportOutcome::NOT_COPIED.to_vec());
        assert_eq!(parse_outcomes(Some("all")).unwrap().len(), 15);
        assert_eq!(
            parse_outcomes(Some("missing,sizeMismatch")).unwrap(),
            vec![ReportOutcome::Missing, ReportOutcome::SizeMismatch]
        );
        assert_eq!(
            parse_outcomes(Some("failed, retrying,failed")).unwrap(),
            vec![ReportOutcome::Failed, ReportOutcome::Retrying]
        );
        let e = parse_outcomes(Some("failed,glacier")).unwrap_err();
        assert!(e.message().starts_with("`glacier` is not an outcome"), "{e}");
        assert!(e.message().contains("noTransferNeeded"), "{e}");
        for &o in ReportOutcome::ALL {
            assert_eq!(ReportOutcome::from_name(o.name()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.name());
            // The same name as the run's counter, the retrying rows' marker, or a verify
            // run's difference.
            let verify = [
                "missing",
                "extra",
                "sizeMismatch",
                "checksumMismatch",
                "metadataMismatch",
            ];
            let known = o.name() == crate::state::runs::counting::RETRYING
                || verify.contains(&o.name())
                || crate::state::runs::counters::Tally::ALL
                    .iter()
                    .any(|t| t.name() == o.name());
            assert!(known, "{}", o.name());
        }
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let l = ReportLine {
            key: "a,b \"c\"".into(),
            outcome: ReportOutcome::Unsupported,
            bytes: 3,
            reason: Some("unsupported: GLACIER (restore the object first)".into()),
            attempt: None,
        };
        assert_eq!(
            csv_line(&l),
            "\"a,b \"\"c\"\"\",unsupported,3,unsupported: GLACIER (restore the object first),"
        );
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_evaluate_are_defused() {
        let line = |key: &str, reason: &str| {
            csv_line(&ReportLine {
                key: key.into(),
                outcome: ReportOutcome::Failed,
                bytes: 1,
                reason: Some(reason.into()),
                attempt: Some(2),
            })
        };
        for (raw, cell) in [
            ("=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\""),
            ("+1", "\"'+1\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\tcmd", "\"'\tcmd\""),
            ("\rcmd", "\"'\rcmd\""),
            ("\0x", "\"'\0x\""),
        ] {
            assert_eq!(line(raw, "ok"), format!("{cell},failed,1,ok,2"), "key {raw:?}");
            assert_eq!(line("k", raw), format!("k,failed,1,{cell},2"), "reason {raw:?}");
        }
        // Only a leading character counts; inner ones are plain text.
        assert_eq!(line("a=b-c", "x@y"), "a=b-c,failed,1,x@y,2");
    }
}
