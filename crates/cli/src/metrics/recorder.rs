//! The process's `metrics` recorder for `serve --metrics`: counters and
//! gauges as atomics, histograms as fixed buckets ([`Buckets`]), kept in
//! `metrics-util`'s sharded registry and rendered as Prometheus text.
//!
//! It replaces `metrics-exporter-prometheus` for one reason, measured: that
//! exporter stores each histogram sample until a scrape buckets it, which
//! with the clock was most of the 19 % of server CPU per request that
//! `--metrics` cost (docs/benchmarks.md). Counters and gauges cost the
//! same either way.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SetRecorderError, SharedString,
    Unit, atomics::AtomicU64,
};
use metrics_util::registry::{Registry, Storage};

use super::{histogram::Buckets, render};

/// Builds and installs the recorder.
#[derive(Debug, Default)]
pub(crate) struct PrometheusBuilder {
    buckets: HashMap<String, Box<[f64]>>,
}

impl PrometheusBuilder {
    /// Histograms named `name` get these bucket bounds (others get
    /// Prometheus' default ones, [`DEFAULT_BUCKETS`]).
    pub(crate) fn buckets_for(mut self, name: &str, bounds: &[f64]) -> Self {
        self.buckets.insert(name.to_owned(), bounds.into());
        self
    }

    /// The recorder and the handle that renders it, not installed.
    pub(crate) fn build(self) -> (PrometheusRecorder, PrometheusHandle) {
        let shared = Arc::new(Shared {
            registry: Registry::new(BucketStorage {
                buckets: self.buckets,
            }),
            descriptions: Mutex::default(),
        });
        (
            PrometheusRecorder {
                shared: shared.clone(),
            },
            PrometheusHandle { shared },
        )
    }

    /// Installs the recorder for the whole process.
    pub(crate) fn install(self) -> Result<PrometheusHandle, SetRecorderError<PrometheusRecorder>> {
        let (recorder, handle) = self.build();
        metrics::set_global_recorder(recorder)?;
        Ok(handle)
    }
}

/// Prometheus' default buckets (`client_golang`'s `DefBuckets`), in seconds.
pub(crate) const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub(crate) struct Shared {
    pub(crate) registry: Registry<Key, BucketStorage>,
    /// `# HELP` text by metric name.
    pub(crate) descriptions: Mutex<HashMap<String, SharedString>>,
}

/// How the registry makes each kind of metric.
pub(crate) struct BucketStorage {
    buckets: HashMap<String, Box<[f64]>>,
}

impl Storage<Key> for BucketStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<Buckets>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::default()
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        // `GaugeFn for AtomicU64` keeps `f64` bits; 0 is 0.0.
        Arc::default()
    }

    fn histogram(&self, key: &Key) -> Self::Histogram {
        let bounds = self
            .buckets
            .get(key.name())
            .map_or(DEFAULT_BUCKETS, |b| &b[..]);
        Arc::new(Buckets::new(bounds))
    }
}

/// The recorder; see the module's documentation.
pub(crate) struct PrometheusRecorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PrometheusRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusRecorder").finish_non_exhaustive()
    }
}

impl PrometheusRecorder {
    fn describe(&self, key: KeyName, description: SharedString) {
        self.shared
            .descriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.as_str().to_owned(), description);
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.shared
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.shared
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.shared
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// Renders what the recorder holds; cheap to clone.
#[derive(Clone)]
pub(crate) struct PrometheusHandle {
    shared: Arc<Shared>,
}

impl PrometheusHandle {
    /// Every metric, as Prometheus text (format 0.0.4).
    pub(crate) fn render(&self) -> String {
        render::render(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metrics::{Key, Label, Recorder};

    use super::PrometheusBuilder;

    const META: metrics::Metadata<'static> =
        metrics::Metadata::new("test", metrics::Level::INFO, None);

    /// Each sample of a Prometheus text, as `name{sorted labels}` → value
    /// (`le` read as a number, so `1` and `1.0` are the same bucket).
    fn samples(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
                let mut labels: Vec<String> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| match l.strip_prefix("le=") {
                        Some(le) => {
                            let le = le.trim_matches('"');
                            let le: f64 = if le == "+Inf" {
                                f64::INFINITY
                            } else {
                                le.parse().unwrap()
                            };
                            format!("le={le}")
                        }
                        None => l.to_owned(),
                    })
                    .collect();
                labels.sort();
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap(),
                };
                (format!("{name}{{{}}}", labels.join(",")), value)
            })
            .collect()
    }

    /// The same figures recorded into ours and into
    /// `metrics-exporter-prometheus` give the same samples.
    #[test]
    fn renders_what_the_prometheus_exporter_renders() {
        let bounds = [0.001, 0.01, 0.1, 1.0];
        let (ours, handle) = PrometheusBuilder::default()
            .buckets_for("lat_seconds", &bounds)
            .build();
        let theirs = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("lat_seconds".to_owned()),
                &bounds,
            )
            .unwrap()
            .build_recorder();
        let recorders: [&dyn Recorder; 2] = [&ours, &theirs];
        for r in recorders {
            for (op, n) in [("echo", 5), ("greet", 2)] {
                let key = Key::from_parts(
                    "calls_total",
                    vec![Label::new("operation", op), Label::new("outcome", "ok")],
                );
                r.register_counter(&key, &META).increment(n);
                let lat = r.register_histogram(
                    &Key::from_parts("lat_seconds", vec![Label::new("operation", op)]),
                    &META,
                );
                for i in 0..n {
                    lat.record(0.0004 * 10f64.powi(i as i32));
                }
                // On a bound: in that bucket ("less than or equal").
                lat.record(0.1);
            }
            let open = r.register_gauge(&Key::from_name("open"), &META);
            open.increment(3.0);
            open.decrement(1.0);
        }
        let theirs = theirs.handle().render();
        assert_eq!(samples(&handle.render()), samples(&theirs), "{theirs}");
    }
}
