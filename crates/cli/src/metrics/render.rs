//! Prometheus text exposition format 0.0.4: one `# TYPE` line per metric
//! family, then its samples; families and samples sorted, so that two
//! scrapes of the same figures read the same.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{PoisonError, atomic::Ordering::Relaxed},
};

use metrics::Key;

use super::recorder::Shared;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Each family's series: `(labels, lines)`, the lines without the metric
/// name (each starts with a suffix such as `_bucket`, a label set or a
/// space).
type Families = BTreeMap<(String, Kind), Vec<(String, Vec<String>)>>;

pub(super) fn render(shared: &Shared) -> String {
    let mut families = Families::new();
    let mut add = |key: &Key, kind, lines: Vec<String>| {
        families
            .entry((metric_name(key.name()), kind))
            .or_default()
            .push((labels(key, None), lines));
    };
    shared.registry.visit_counters(|key, c| {
        let line = format!("{} {}", labels(key, None), c.load(Relaxed));
        add(key, Kind::Counter, vec![line]);
    });
    shared.registry.visit_gauges(|key, g| {
        let value = number(f64::from_bits(g.load(Relaxed)));
        add(
            key,
            Kind::Gauge,
            vec![format!("{} {value}", labels(key, None))],
        );
    });
    shared.registry.visit_histograms(|key, h| {
        let s = h.snapshot();
        let bucket = |le, n| format!("_bucket{} {n}", labels(key, Some(le)));
        let mut lines: Vec<_> = s.cumulative.iter().map(|&(le, n)| bucket(le, n)).collect();
        lines.push(bucket(f64::INFINITY, s.count));
        let plain = labels(key, None);
        lines.push(format!("_sum{plain} {}", number(s.sum)));
        lines.push(format!("_count{plain} {}", s.count));
        add(key, Kind::Histogram, lines);
    });

    let descriptions = shared
        .descriptions
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut out = String::new();
    for ((name, kind), mut series) in families {
        series.sort();
        if let Some(help) = descriptions.get(&name) {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        }
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        for line in series.iter().flat_map(|(_, lines)| lines) {
            let _ = writeln!(out, "{name}{line}");
        }
    }
    out
}

/// `{k="v",…}` (with `le` last when given), or nothing without labels.
fn labels(key: &Key, le: Option<f64>) -> String {
    let mut parts: Vec<String> = key
        .labels()
        .map(|l| format!("{}=\"{}\"", label_name(l.key()), escape_value(l.value())))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{}\"", number(le)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A sample value as Prometheus reads it (`+Inf`, `-Inf`, `NaN`; Rust's
/// own spelling of the finite ones, which never uses an exponent).
fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// Metric names are `[a-zA-Z_:][a-zA-Z0-9_:]*`: anything else becomes `_`.
fn metric_name(name: &str) -> String {
    crate::text::identifier(name, |c| c == ':')
}

/// Label names are `[a-zA-Z_][a-zA-Z0-9_]*`.
fn label_name(name: &str) -> String {
    crate::text::identifier(name, |_| false)
}

/// Label values escape `\`, `"` and newlines.
fn escape_value(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// `# HELP` text escapes `\` and newlines.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::super::recorder::PrometheusBuilder;
    use metrics::{Key, Label, Recorder};

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        Key::from_parts(
            name,
            labels
                .iter()
                .map(|&(k, v)| Label::new(k, v))
                .collect::<Vec<_>>(),
        )
    }

    const META: metrics::Metadata<'static> =
        metrics::Metadata::new("test", metrics::Level::INFO, None);

    #[test]
    fn renders_each_kind_in_the_text_format() {
        let (recorder, handle) = PrometheusBuilder::default()
            .buckets_for("lat", &[0.5, 1.0])
            .build();
        recorder.describe_counter("hits_total".into(), None, "Hits.\nAll of them.".into());
        let ok = key("hits_total", &[("outcome", "ok")]);
        recorder.register_counter(&ok, &META).increment(3);
        recorder
            .register_counter(&key("hits_total", &[("outcome", "a\"b\\c\nd")]), &META)
            .increment(1);
        let open = recorder.register_gauge(&key("open", &[]), &META);
        open.increment(2.0);
        open.decrement(0.5);
        recorder
            .register_gauge(&key("weird.name-1", &[("bad-label", "x")]), &META)
            .set(f64::NEG_INFINITY);
        let lat = recorder.register_histogram(&key("lat", &[("op", "echo")]), &META);
        for v in [0.25, 0.5, 0.75, 2.0] {
            lat.record(v);
        }
        // Registered again: the same series, not a second one.
        recorder.register_counter(&ok, &META).increment(1);

        assert_eq!(
            handle.render(),
            "# HELP hits_total Hits.\\nAll of them.\n\
             # TYPE hits_total counter\n\
             hits_total{outcome=\"a\\\"b\\\\c\\nd\"} 1\n\
             hits_total{outcome=\"ok\"} 4\n\
             # TYPE lat histogram\n\
             lat_bucket{op=\"echo\",le=\"0.5\"} 2\n\
             lat_bucket{op=\"echo\",le=\"1\"} 3\n\
             lat_bucket{op=\"echo\",le=\"+Inf\"} 4\n\
             lat_sum{op=\"echo\"} 3.5\n\
             lat_count{op=\"echo\"} 4\n\
             # TYPE open gauge\n\
             open 1.5\n\
             # TYPE weird_name_1 gauge\n\
             weird_name_1{bad_label=\"x\"} -Inf\n"
        );
    }

    #[test]
    fn histograms_without_configured_buckets_get_the_default_ones() {
        let (recorder, handle) = PrometheusBuilder::default().build();
        recorder
            .register_histogram(&key("h", &[]), &META)
            .record(0.007);
        let text = handle.render();
        assert!(text.contains("h_bucket{le=\"0.005\"} 0\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"0.01\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"10\"} 1\n"), "{text}");
        assert!(text.contains("h_count 1\n"), "{text}");
    }

    #[test]
    fn names_that_start_with_a_digit_are_prefixed() {
        assert_eq!(super::metric_name("1a:b"), "_1a:b");
        assert_eq!(super::label_name("a:b"), "a_b");
        assert_eq!(super::metric_name(""), "_");
    }
}
