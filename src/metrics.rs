//! Metrics: counters and latency histograms, rendered in the Prometheus text format.
//! Labels never carry secrets: only integrator ids, hook and endpoint names, outcomes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

type Key = (&'static str, String);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The engine's metrics registry.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, u64>>,
    gauges: Mutex<BTreeMap<Key, i64>>,
    histograms: Mutex<BTreeMap<Key, Histogram>>,
}

/// `k1="v1",k2="v2"`, values escaped as Prometheus wants; one allocation (this runs several
/// times per request).
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s
}

impl Metrics {
    pub fn inc(&self, name: &'static str, l: &[(&str, &str)]) {
        self.add(name, l, 1);
    }

    pub fn add(&self, name: &'static str, l: &[(&str, &str)], n: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name, labels(l))).or_default() += n;
    }

    pub fn set_gauge(&self, name: &'static str, l: &[(&str, &str)], v: i64) {
        let mut g = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        g.insert((name, labels(l)), v);
    }

    pub fn observe(&self, name: &'static str, l: &[(&str, &str)], d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let e = h.entry((name, labels(l))).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                e.counts[i] += 1;
            }
        }
        e.count += 1;
        e.sum += secs;
    }

    /// A counter's value (tests, the bench report).
    pub fn counter(&self, name: &'static str, l: &[(&str, &str)]) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(name, labels(l))).copied().unwrap_or(0)
    }

    /// The sum of a counter over all its label sets.
    pub fn counter_total(&self, name: &'static str) -> u64 {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().filter(|((n, _), _)| *n == name).map(|(_, v)| *v).sum()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut last = "";
        for ((name, l), v) in self.counters.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
        for ((name, l), v) in self.gauges.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} gauge");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
        for ((name, l), h) in self.histograms.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} histogram");
                last = name;
            }
            let sep = if l.is_empty() { "" } else { "," };
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"{b}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.inc("callbridge_hooks_total", &[("integrator", "a"), ("hook", "saveLogCRM"), ("outcome", "ok")]);
        m.observe("callbridge_crm_request_seconds", &[("integrator", "a")], Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("callbridge_hooks_total{integrator=\"a\",hook=\"saveLogCRM\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("callbridge_crm_request_seconds_bucket{integrator=\"a\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("callbridge_crm_request_seconds_bucket{integrator=\"a\",le=\"0.001\"} 0"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x"), ("b", "q\"b\\s\nn")]), r#"a="x",b="q\"b\\s\nn""#);
    }
}
