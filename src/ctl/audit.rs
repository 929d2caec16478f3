//! `proxyuserctl audit`: reading the audit log (filtered, followed) and checking it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::{Failure, Outcome, print_json};
use crate::audit::{self, Event, Record};
use crate::client::AdminProxy;
use crate::policy::format_time;
use crate::time::{Micros, now_micros};

/// Which records to show: every filter given must match.
#[derive(Debug, Default)]
pub struct Filter {
    pub login: Option<String>,
    pub kinds: Vec<String>,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
}

impl Filter {
    /// Checks the kinds against the events the daemon records.
    pub fn new(
        login: Option<String>,
        kinds: Vec<String>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Self, Failure> {
        for kind in &kinds {
            if !Event::ALL.iter().any(|e| e.name() == kind) {
                let known: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
                return Err(format!(
                    "--kind {kind}: no such kind of record (kinds: {})",
                    known.join(", ")
                )
                .into());
            }
        }
        let time = |option: &str, text: Option<&str>| {
            text.map(|t| parse_time(t, now_micros()).map_err(|e| format!("{option} {t:?}: {e}")))
                .transpose()
        };
        Ok(Filter {
            login,
            kinds,
            since: time("--since", since)?,
            until: time("--until", until)?,
        })
    }

    pub fn matches(&self, record: &Record) -> bool {
        let get = |k: &str| record.get(k).map(String::as_str).unwrap_or("");
        let time: Option<Micros> = get(audit::TIME).parse().ok();
        self.login.as_deref().is_none_or(|l| get("login") == l)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| get(audit::EVENT) == k))
            && self.since.is_none_or(|s| time.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| time.is_some_and(|t| t <= u))
    }
}

/// A point in time for `--since`/`--until`: `now`, `today`, a time ago (`-90s`, `-15m`,
/// `-2h`, `-7d`, or `2h ago`), a date (`2026-12-01`, midnight UTC) or a date-time
/// (`2026-12-01T10:00:00Z`, `2026-12-01 10:00` is UTC).
pub fn parse_time(text: &str, now: Micros) -> Result<Micros, String> {
    let text = text.trim();
    match text {
        "now" => return Ok(now),
        "today" => return Ok(now - now.rem_euclid(86_400 * 1_000_000)),
        _ => {}
    }
    let ago = text
        .strip_prefix('-')
        .or_else(|| text.strip_suffix("ago").map(str::trim));
    if let Some(ago) = ago {
        let split = ago.find(|c: char| !c.is_ascii_digit()).unwrap_or(ago.len());
        let (number, unit) = ago.split_at(split);
        let number: i64 = number
            .parse()
            .map_err(|_| "expected a number before the unit, as in -15m".to_string())?;
        let unit_secs = match unit.trim() {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => return Err(format!("unknown unit {other:?} (s, m, h or d)")),
        };
        return Ok(now.saturating_sub(number.saturating_mul(unit_secs * 1_000_000)));
    }
    let mut normalized = text.replacen(' ', "T", 1);
    if normalized.len() == 16 {
        normalized.push_str(":00"); // YYYY-MM-DDTHH:MM
    }
    let datetime: toml::value::Datetime = normalized.parse().map_err(|_| {
        "not a time: use now, today, -15m, -2h, -7d, 2026-12-01 or 2026-12-01T10:00:00Z".to_string()
    })?;
    let date = datetime.date.ok_or("a time needs a date")?;
    let days = crate::policy::days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let (mut secs, mut micros) = (days * 86_400, 0);
    if let Some(time) = datetime.time {
        secs += i64::from(time.hour) * 3600
            + i64::from(time.minute) * 60
            + i64::from(time.second.unwrap_or(0));
        micros = i64::from(time.nanosecond.unwrap_or(0) / 1000);
    }
    if let Some(toml::value::Offset::Custom { minutes }) = datetime.offset {
        secs -= i64::from(minutes) * 60;
    }
    Ok(secs * 1_000_000 + micros)
}

/// Records the daemon holds from `from` on, a page at a time, handed to `each`; the
/// sequence number to ask for next. `progress` hears how many records came so far.
async fn for_each_page(
    admin: &AdminProxy<'_>,
    from: u64,
    mut progress: impl FnMut(u64),
    mut each: impl FnMut(Record),
) -> Result<u64, Failure> {
    let (mut next, mut count) = (from, 0u64);
    loop {
        let page = admin.audit_log(next, 0).await?;
        let Some((last, _)) = page.last() else {
            return Ok(next);
        };
        next = last + 1;
        count += page.len() as u64;
        for (_, record) in page {
            each(record.into_iter().collect::<BTreeMap<_, _>>());
        }
        progress(count);
    }
}

fn print_line(record: &Record) {
    let get = |k: &str| record.get(k).map(String::as_str).unwrap_or("");
    let time = get(audit::TIME)
        .parse()
        .map(format_time)
        .unwrap_or_default();
    println!(
        "{:>6} {time} {:<14} {}",
        get(audit::SEQ),
        get(audit::EVENT),
        audit::describe(record)
    );
}

/// How often `--follow` asks for new records.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// `audit` without `--verify`: matching records from sequence number `from` on; with
/// `follow`, then every new one as it is written. `--json` prints an array, or with
/// `follow` one object per line.
pub async fn show(
    admin: &AdminProxy<'_>,
    from: u64,
    filter: &Filter,
    follow: bool,
    json: bool,
) -> Outcome {
    let mut shown = Vec::new();
    let mut any = false;
    let mut emit = |record: Record| {
        if !filter.matches(&record) {
            return;
        }
        any = true;
        match (json, follow) {
            (true, true) => println!("{}", serde_json::to_string(&record).unwrap_or_default()),
            (true, false) => shown.push(record),
            (false, _) => print_line(&record),
        }
    };
    let mut next = for_each_page(admin, from, |_| {}, &mut emit).await?;
    if !follow {
        if json {
            print_json(&json!(shown));
        } else if !any {
            println!(
                "no audit records{}",
                if filter.is_empty() { "" } else { " match" }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        next = for_each_page(admin, next, |_| {}, &mut emit).await?;
    }
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.login.is_none()
            && self.kinds.is_empty()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// Progress of a long fetch on stderr: a counter kept on one line on a terminal, else a
/// line every [`PROGRESS_EVERY`] records (logs of cron jobs stay short).
struct Progress {
    total: u64,
    terminal: bool,
    reported: u64,
}

const PROGRESS_EVERY: u64 = 100_000;

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            terminal: std::io::stderr().is_terminal(),
            reported: 0,
        }
    }

    fn update(&mut self, done: u64) {
        if self.terminal {
            eprint!("\r{}", progress_line(done, self.total));
        } else if done / PROGRESS_EVERY > self.reported / PROGRESS_EVERY {
            eprintln!("{}", progress_line(done, self.total));
        } else {
            return;
        }
        self.reported = done;
    }

    fn finish(&self) {
        if self.terminal && self.reported > 0 {
            eprint!("\r\x1b[K");
        }
    }
}

fn progress_line(done: u64, total: u64) -> String {
    let percent = (done * 100).checked_div(total).unwrap_or(100).min(100);
    format!("audit --verify: read {done} of {total} records ({percent}%)")
}

/// What `audit --verify` found.
#[derive(Default)]
struct Verification {
    records: u64,
    /// The first record where the chain does not verify.
    broken_at: Option<u64>,
    problems: Vec<String>,
    journal: String,
}

/// Walks the retained chain from the checkpoint pruning left to the head, reports the
/// losses the daemon recorded (`audit-gap`), and compares the chain with the copy in
/// journald when that can be read.
pub async fn verify(admin: &AdminProxy<'_>, json: bool) -> Outcome {
    let (chain, checkpoint_seq, checkpoint_hash, head_seq, head_hash) = admin.audit_head().await?;
    let mut progress = Progress::new(head_seq.saturating_sub(checkpoint_seq));
    let mut records = Vec::new();
    for_each_page(
        admin,
        checkpoint_seq + 1,
        |done| progress.update(done),
        |r| records.push(r),
    )
    .await?;
    progress.finish();
    let mut found = Verification::default();
    match audit::verify_from(checkpoint_seq, &checkpoint_hash, &records) {
        Ok(n) => found.records = n,
        Err(broken) => {
            found.broken_at = Some(broken.seq);
            found.problems.push(broken.to_string());
        }
    }
    let get = |r: &Record, k: &str| r.get(k).cloned().unwrap_or_default();
    if let Some(last) = records.last()
        && (get(last, audit::SEQ) != head_seq.to_string() || get(last, audit::HASH) != head_hash)
    {
        found.problems.push(format!(
            "the log ends at record {} but the daemon's head is record {head_seq}",
            get(last, audit::SEQ)
        ));
    }
    for record in records
        .iter()
        .filter(|r| get(r, audit::EVENT) == "audit-gap")
    {
        found.problems.push(format!(
            "record {} says audit records were lost: {}",
            get(record, audit::SEQ),
            get(record, "missing")
        ));
    }
    if checkpoint_seq > 0 {
        let attested = records.iter().any(|r| {
            get(r, audit::EVENT) == "audit-pruned"
                && get(r, "to_seq") == checkpoint_seq.to_string()
                && get(r, "checkpoint_hash") == checkpoint_hash
        });
        if !attested {
            found.problems.push(format!(
                "the chain starts after record {checkpoint_seq}, but no audit-pruned record \
                 says that record was pruned"
            ));
        }
    }
    compare_with_journal(&chain, checkpoint_seq, head_seq, &records, &mut found);
    let intact = found.problems.is_empty();
    if json {
        print_json(&json!({
            "intact": intact, "records": found.records, "chain": chain,
            "broken_at": found.broken_at,
            "checkpoint": checkpoint_seq, "head": head_seq, "head_hash": head_hash,
            "problems": found.problems, "journal": found.journal,
        }));
    } else if intact {
        let from = if checkpoint_seq > 0 {
            format!(
                " (records {}–{head_seq}; older ones pruned)",
                checkpoint_seq + 1
            )
        } else {
            String::new()
        };
        println!(
            "audit chain intact: {} {}{from}, head {head_hash}",
            found.records,
            if found.records == 1 {
                "record"
            } else {
                "records"
            }
        );
        println!("{}", found.journal);
    } else {
        for problem in &found.problems {
            println!("{problem}");
        }
        println!("{}", found.journal);
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Cross-checks the store's records with the copies journald holds of chain `chain`
/// (sent with every record once it was durable): a copy whose record the store lacks,
/// or holds with another hash, is a loss.
fn compare_with_journal(
    chain: &str,
    checkpoint: u64,
    head: u64,
    records: &[Record],
    found: &mut Verification,
) {
    let output = std::process::Command::new("journalctl")
        .args([
            "-o",
            "json",
            "--no-pager",
            "--output-fields=PROXYUSERD_SEQ,PROXYUSERD_HASH",
        ])
        .arg("SYSLOG_IDENTIFIER=proxyuserd-audit")
        .arg(format!("PROXYUSERD_CHAIN={chain}"))
        .stderr(std::process::Stdio::null())
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(_) | Err(_) => {
            found.journal = "journald copy not checked (journalctl cannot read it here)".into();
            return;
        }
    };
    // The hash of what the store holds now, recomputed: an edited record whose hash
    // field was left alone differs from its copy too.
    let stored: std::collections::HashMap<String, String> = records
        .iter()
        .map(|r| {
            let seq = r.get(audit::SEQ).cloned().unwrap_or_default();
            (seq, audit::record_hash(r))
        })
        .collect();
    let mut copies = 0u64;
    let mut lost = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(seq), Some(hash)) = (
            entry["PROXYUSERD_SEQ"].as_str(),
            entry["PROXYUSERD_HASH"].as_str(),
        ) else {
            continue;
        };
        let Ok(n) = seq.parse::<u64>() else { continue };
        copies += 1;
        if n <= checkpoint {
            continue;
        }
        match stored.get(seq) {
            Some(h) if h == hash => {}
            Some(_) => lost.push(format!("record {seq} differs from its journald copy")),
            None if n > head => lost.push(format!("record {seq} is in journald, after the head")),
            None => lost.push(format!("record {seq} is in journald but not in the log")),
        }
    }
    if copies == 0 {
        found.journal = "journald holds no copy of this chain".into();
        return;
    }
    found.journal = format!(
        "journald holds {copies} {} of this chain's records: {}",
        if copies == 1 { "copy" } else { "copies" },
        if lost.is_empty() {
            "all match"
        } else {
            "some do not match"
        }
    );
    found.problems.extend(lost);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_764_633_600_000_000; // 2025-12-02T00:00:00Z

    #[test]
    fn times_read_as_people_write_them() {
        let at = |t: &str| parse_time(t, NOW + 3_600_000_000).unwrap();
        assert_eq!(at("now"), NOW + 3_600_000_000);
        assert_eq!(at("today"), NOW);
        assert_eq!(at("-1h"), NOW);
        assert_eq!(at("60m ago"), NOW);
        assert_eq!(at("-3600s"), NOW);
        assert_eq!(at("2025-12-02"), NOW);
        assert_eq!(at("2025-12-02T00:00:00Z"), NOW);
        assert_eq!(at("2025-12-02 01:00"), NOW + 3_600_000_000);
        assert_eq!(at("2025-12-02T02:00:00+02:00"), NOW);
        let err = parse_time("yesterday", NOW).unwrap_err();
        assert!(err.contains("use now, today, -15m"), "{err}");
        let err = parse_time("-5w", NOW).unwrap_err();
        assert!(err.contains("unknown unit \"w\""), "{err}");
    }

    #[test]
    fn filters_combine() {
        let record = |event: &str, login: &str, time: Micros| -> Record {
            [
                (audit::EVENT.to_string(), event.to_string()),
                ("login".to_string(), login.to_string()),
                (audit::TIME.to_string(), time.to_string()),
            ]
            .into_iter()
            .collect()
        };
        let filter = Filter::new(
            Some("alice".into()),
            vec!["exec-start".into(), "download".into()],
            None,
            None,
        )
        .unwrap();
        assert!(filter.matches(&record("exec-start", "alice", NOW)));
        assert!(filter.matches(&record("download", "alice", NOW)));
        assert!(!filter.matches(&record("exec-end", "alice", NOW)));
        assert!(!filter.matches(&record("exec-start", "bob", NOW)));
        let window = Filter {
            since: Some(NOW),
            until: Some(NOW + 10),
            ..Filter::default()
        };
        assert!(window.matches(&record("denied", "x", NOW + 10)));
        assert!(!window.matches(&record("denied", "x", NOW - 1)));
        assert!(!window.matches(&record("denied", "x", NOW + 11)));
        let err = Filter::new(None, vec!["exec".into()], None, None)
            .err()
            .unwrap()
            .message;
        assert!(
            err.starts_with("--kind exec: no such kind of record (kinds: proxy-set"),
            "{err}"
        );
    }

    #[test]
    fn progress_says_how_far() {
        assert_eq!(
            progress_line(250_000, 1_000_000),
            "audit --verify: read 250000 of 1000000 records (25%)"
        );
        assert_eq!(
            progress_line(5, 0),
            "audit --verify: read 5 of 0 records (100%)"
        );
    }
}
