//! A rule back into the drop-in file format, for `ListRules`.

use std::fmt::Write;

use super::{Located, Micros, Names, Rule};

pub(super) fn rule(rule: &Rule) -> String {
    let mut out = format!("[[{}]]\n", rule.effect.as_str());
    let names = |list: &Names| match list {
        Names::Any => "[\"*\"]".to_string(),
        Names::Only(list) => strings(list),
    };
    if !rule.logins.is_empty() {
        let _ = writeln!(out, "logins = {}", names(&rule.logins));
    }
    if !rule.login_groups.is_empty() {
        let _ = writeln!(out, "login_groups = {}", strings(&rule.login_groups));
    }
    if !rule.proxies.is_empty() {
        let _ = writeln!(out, "proxies = {}", names(&rule.proxies));
    }
    if !rule.proxy_groups.is_empty() {
        let _ = writeln!(out, "proxy_groups = {}", strings(&rule.proxy_groups));
    }
    if let Some(expires) = rule.expires {
        let _ = writeln!(out, "expires = {}", rfc3339(expires));
    }
    out
}

fn strings(list: &[Located<String>]) -> String {
    // Names are validated to a character set that needs no escaping.
    let quoted: Vec<String> = list.iter().map(|n| format!("\"{}\"", n.value)).collect();
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
