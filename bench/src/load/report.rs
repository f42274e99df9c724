//! The result of a run, as text for people or as one JSON line for scripts.

use std::fmt::Write;

use super::args::{Args, Distribution};
use super::stats::{Kind, Stats};

/// The quantiles reported, with their names.
const QUANTILES: [(&str, f64); 3] = [("p50", 0.50), ("p99", 0.99), ("p999", 0.999)];

/// What the preload did.
pub struct Preloaded {
    pub keys: u64,
    pub secs: f64,
    pub stats: Stats,
}

/// Everything a run reports.
pub struct Report<'a> {
    pub args: &'a Args,
    /// Merged measurements of all clients.
    pub stats: &'a Stats,
    /// Length of the measured window.
    pub secs: f64,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    pub preload: Option<Preloaded>,
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

impl Report<'_> {
    /// Several lines of text.
    pub fn text(&self) -> String {
        let (s, secs) = (self.stats, self.secs);
        let mut out = format!("flotilla-load: {}\n", self.config_line());
        if let Some(p) = &self.preload {
            let (ok, err) = (p.stats.writes.ok(), p.stats.error_count());
            let _ = writeln!(
                out,
                "preload: {ok} of {} keys in {:.2} s ({:.0} puts/s), {err} failed attempts",
                p.keys,
                p.secs,
                rate(ok, p.secs)
            );
        }
        let stopped = if self.interrupted {
            " (interrupted)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "measured: {secs:.3} s{stopped}, {} ops ({} reads, {} writes), {} errors",
            s.ok(),
            s.reads.ok(),
            s.writes.ok(),
            s.error_count()
        );
        let _ = writeln!(
            out,
            "throughput: {:.1} ops/s (reads {:.1}/s, writes {:.1}/s)",
            rate(s.ok(), secs),
            rate(s.reads.ok(), secs),
            rate(s.writes.ok(), secs)
        );
        let _ = writeln!(
            out,
            "latency ms {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p99", "p999", "max", "mean"
        );
        for (name, kind) in [("read", &s.reads), ("write", &s.writes)] {
            let _ = writeln!(out, "{}", latency_row(name, kind));
        }
        if s.reads.ok() > 0 {
            let _ = writeln!(
                out,
                "read misses: {} of {} reads found no value",
                s.reads.misses,
                s.reads.ok()
            );
        }
        let _ = writeln!(out, "errors: {}", error_list(s));
        for (name, kind) in [("read", &s.reads), ("write", &s.writes)] {
            for (code, message) in &kind.samples {
                let _ = writeln!(out, "  first {name} {code}: {message}");
            }
        }
        out
    }

    fn config_line(&self) -> String {
        let a = self.args;
        let dist = match a.distribution {
            Distribution::Zipfian => format!("zipfian (theta {})", a.zipf_theta),
            d => d.name().to_string(),
        };
        let channels = if a.channel_per_client {
            "a connection each"
        } else {
            "a connection per endpoint"
        };
        let rpc = a.rpc_used().name();
        let limit = match (a.duration(), a.ops) {
            (Some(d), Some(n)) => format!("{} s or {n} ops", d.as_secs()),
            (Some(d), None) => format!("{} s", d.as_secs()),
            (None, n) => format!("{} ops", n.unwrap_or(0)),
        };
        let spelled = if a.ascii_keys { " (ASCII keys)" } else { "" };
        format!(
            "{} clients ({channels}, {rpc} RPCs) on {} {}; {dist}{spelled} over {} keys; key {} B, value {} B; read ratio {}; \
             seed {}; warm-up {} s; measuring {limit}",
            a.clients,
            a.backend.name(),
            a.endpoints.join(","),
            a.keys,
            a.key_size,
            a.value_size,
            a.read_ratio,
            a.seed,
            a.warmup_secs,
        )
    }

    /// One line of JSON.
    pub fn json(&self) -> String {
        let (a, s, secs) = (self.args, self.stats, self.secs);
        let endpoints: Vec<String> = a.endpoints.iter().map(|e| json_str(e)).collect();
        let mut out = format!(
            "{{\"backend\":\"{}\",\"rpc\":\"{}\",\"ascii_keys\":{},\"endpoints\":[{}],\"clients\":{},\"channel_per_client\":{},\"distribution\":\"{}\",\"zipf_theta\":{},\
             \"keys\":{},\"key_size\":{},\"value_size\":{},\"read_ratio\":{},\"seed\":{},\"warmup_secs\":{},",
            a.backend.name(),
            a.rpc_used().name(),
            a.ascii_keys,
            endpoints.join(","),
            a.clients,
            a.channel_per_client,
            a.distribution.name(),
            a.zipf_theta,
            a.keys,
            a.key_size,
            a.value_size,
            a.read_ratio,
            a.seed,
            a.warmup_secs,
        );
        let _ = write!(
            out,
            "\"duration_secs\":{secs:.3},\"interrupted\":{},\"ops\":{},\"ops_per_sec\":{:.1},\"errors\":{},\"reads\":{},\"writes\":{},\"preload\":",
            self.interrupted,
            s.ok(),
            rate(s.ok(), secs),
            s.error_count(),
            kind_json(&s.reads, secs),
            kind_json(&s.writes, secs),
        );
        match &self.preload {
            None => out.push_str("null}"),
            Some(p) => {
                let ok = p.stats.writes.ok();
                let _ = write!(
                    out,
                    "{{\"keys\":{},\"written\":{ok},\"secs\":{:.3},\"puts_per_sec\":{:.1},\"failed_attempts\":{}}}}}",
                    p.keys,
                    p.secs,
                    rate(ok, p.secs),
                    p.stats.error_count()
                );
            }
        }
        out
    }
}

fn latency_row(name: &str, k: &Kind) -> String {
    if k.ok() == 0 {
        return format!("{name:<10} {:>9}", "-");
    }
    let mut row = format!("{name:<10}");
    for (_, q) in QUANTILES {
        let _ = write!(row, " {:>9.3}", k.quantile_ms(q));
    }
    let _ = write!(row, " {:>9.3} {:>9.3}", k.max_ms(), k.mean_ms());
    row
}

fn error_list(s: &Stats) -> String {
    let mut parts = Vec::new();
    for (name, kind) in [("read", &s.reads), ("write", &s.writes)] {
        parts.extend(
            kind.errors
                .iter()
                .map(|(code, n)| format!("{name} {code} x{n}")),
        );
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn kind_json(k: &Kind, secs: f64) -> String {
    let mut out = format!(
        "{{\"ops\":{},\"ops_per_sec\":{:.1},\"misses\":{}",
        k.ok(),
        rate(k.ok(), secs),
        k.misses
    );
    for (name, q) in QUANTILES {
        let _ = write!(out, ",\"{name}_ms\":{:.3}", k.quantile_ms(q));
    }
    let _ = write!(
        out,
        ",\"max_ms\":{:.3},\"mean_ms\":{:.3},\"errors\":{{",
        k.max_ms(),
        k.mean_ms()
    );
    let errors: Vec<String> = k
        .errors
        .iter()
        .map(|(code, n)| format!("{}:{n}", json_str(code)))
        .collect();
    out.push_str(&errors.join(","));
    out.push_str("}}");
    out
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_json_strings() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
