//! JSON-lines rendering of scrape batches (`--debug.dump-batches`): one object per batch
//! with every sample's full labels, so a person or a test can see exactly what a scrape
//! produced. Stale markers are written as the string `"StaleNaN"`.

use ferry_protocol::is_stale;
use hashbrown::HashMap;
use serde_json::{Value, json};

use crate::scrape::batch::ScrapeBatch;
use crate::series_labels::SeriesLabels;

#[derive(Debug, Default)]
pub struct Dumper {
    series: HashMap<u64, SeriesLabels>,
}

fn value(v: f64) -> Value {
    if is_stale(v) {
        json!("StaleNaN")
    } else if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        json!(v)
    }
}

impl Dumper {
    pub fn line(&mut self, b: &ScrapeBatch) -> String {
        for d in &b.new_series {
            self.series.insert(d.id, d.labels.clone());
        }
        let samples: Vec<Value> = b
            .samples
            .iter()
            .map(|s| {
                let labels = self.series.get(&s.series).map_or(Value::Null, |ls| {
                    Value::Object(
                        ls.iter().map(|l| (l.name.to_owned(), Value::String(l.value.to_string()))).collect(),
                    )
                });
                json!({"labels": labels, "t": s.timestamp, "v": value(s.value)})
            })
            .collect();
        let metadata: Vec<Value> = b
            .metadata
            .iter()
            .map(
                |m| json!({"family": m.metric_family, "type": m.kind.wire(), "help": m.help, "unit": m.unit}),
            )
            .collect();
        json!({
            "target": format!("{:016x}", b.target),
            "timestamp": b.timestamp,
            "error": b.error,
            "new_series": b.new_series.len(),
            "samples": samples,
            "exemplars": b.exemplars.len(),
            "metadata": metadata,
        })
        .to_string()
    }
}
