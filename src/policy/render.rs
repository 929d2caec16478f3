//! A rule back into the drop-in file format, for `ListRules`.

use std::fmt::Write;

use super::Micros;
use super::model::RuleView;

impl RuleView<'_> {
    /// The rule as a TOML table in the drop-in file format.
    pub fn to_toml(&self) -> String {
        rule(self)
    }
}

fn rule(rule: &RuleView<'_>) -> String {
    let entry = rule.entry();
    let mut out = format!("[[{}]]\n", entry.effect.as_str());
    let names = |side| match rule.side(side) {
        None => "[\"*\"]".to_string(),
        Some(list) => strings(&list),
    };
    if !entry.logins.is_empty() {
        let _ = writeln!(out, "logins = {}", names(entry.logins));
    }
    if !entry.login_groups.is_empty() {
        let _ = writeln!(
            out,
            "login_groups = {}",
            strings(&rule.list(entry.login_groups))
        );
    }
    if !entry.proxies.is_empty() {
        let _ = writeln!(out, "proxies = {}", names(entry.proxies));
    }
    if !entry.proxy_groups.is_empty() {
        let _ = writeln!(
            out,
            "proxy_groups = {}",
            strings(&rule.list(entry.proxy_groups))
        );
    }
    if let Some(expires) = entry.expires {
        let _ = writeln!(out, "expires = {}", rfc3339(expires));
    }
    out
}

fn strings(list: &[&str]) -> String {
    // Names are validated to a character set that needs no escaping.
    let quoted: Vec<String> = list.iter().map(|n| format!("\"{n}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `YYYY-MM-DDTHH:MM:SSZ`, with fractional seconds only when present.
pub fn rfc3339(t: Micros) -> String {
    let secs = t.div_euclid(1_000_000);
    let micros = t.rem_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if micros != 0 {
        let _ = write!(s, ".{micros:06}");
    }
    s.push('Z');
    s
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
