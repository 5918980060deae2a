//! Rule matching throughput with 10, 100, 1,000 and 10,000 rules that mix
//! operators, on ~1 KiB JSON events. `match` times the compiled matcher on
//! a prepared event view; `view+match` adds building the view from a
//! CloudEvent, as the broker does per published event.
//!
//! `cargo bench -p switchyard-broker --bench matcher`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use switchyard_broker::model::CloudEvent;
use switchyard_broker::rules::{RuleSet, event_view, parse_rules};
use switchyard_sdk::Event;

/// Rules with no literal field to index by; a fixed handful, as real rule
/// sets have a few catch-alls.
const UNANCHORED: usize = 5;

fn rules(count: usize) -> RuleSet {
    let mut yaml = String::from("rules:\n");
    for i in 0..count {
        let pattern = if i < UNANCHORED {
            format!("{{data: {{total: [{{numeric: [\">\", {}]}}]}}}}", 900 + i)
        } else {
            match i % 4 {
                0 => format!(
                    "{{type: [com.example.t{i}], data: {{total: [{{numeric: [\">\", {}, \"<=\", 1000]}}]}}}}",
                    i % 100
                ),
                1 => {
                    format!("{{type: [com.example.t{i}], data: {{region: [{{prefix: \"us-\"}}]}}}}")
                }
                2 => format!(
                    "{{source: [/svc/{i}], data: {{status: [{{anything-but: [cancelled, refunded]}}]}}}}"
                ),
                _ => format!(
                    "{{type: [com.example.t{i}], $or: [{{data: {{customer: {{tier: [{{equals-ignore-case: gold}}]}}}}}}, {{data: {{total: [{{numeric: [\">=\", 500]}}]}}}}]}}"
                ),
            }
        };
        yaml.push_str(&format!(
            "  - name: r{i}\n    pattern: {pattern}\n    targets: [{{topic: t{}}}]\n",
            i % 50
        ));
    }
    let parsed = parse_rules(&yaml, Path::new("bench.yaml")).expect("valid rules");
    RuleSet::from_rules(parsed, &[]).expect("unique names")
}

/// ~1 KiB events whose type / source hit rules of every kind.
fn events(rule_count: usize) -> Vec<CloudEvent> {
    (0..512)
        .map(|n| {
            let target = (n * 7919) % rule_count.max(1);
            let source = if n % 3 == 0 { format!("/svc/{target}") } else { "/shop".to_string() };
            let status = ["placed", "cancelled", "paid"][n % 3];
            let tier = ["Gold", "silver"][n % 2];
            Event::new(source, format!("com.example.t{target}"))
                .id(format!("e{n}"))
                .partition_key(format!("order-{n}"))
                .json(&serde_json::json!({
                    "orderId": format!("order-{n}"),
                    "total": (n % 1200) as f64 + 0.5,
                    "currency": "EUR",
                    "region": if n % 2 == 0 { "us-east-1" } else { "eu-west-1" },
                    "status": status,
                    "customer": {"id": format!("c-{n}"), "tier": tier, "email": "someone@example.com"},
                    "items": (0..6).map(|i| serde_json::json!({"sku": format!("sku-{i}-{n}"), "qty": i + 1, "price": 9.99})).collect::<Vec<_>>(),
                    "note": "x".repeat(300),
                }))
                .expect("json")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for count in [10, 100, 1_000, 10_000] {
        let set = rules(count);
        let events = events(count);
        let views: Vec<serde_json::Value> = events.iter().map(event_view).collect();
        let bytes: usize = events
            .iter()
            .map(prost::Message::encoded_len)
            .sum::<usize>()
            / events.len();
        let mut group = c.benchmark_group(format!("rules={count}"));
        group.throughput(Throughput::Elements(1));
        let mut next = 0;
        group.bench_function(format!("match ({bytes} B events)"), |b| {
            b.iter(|| {
                next = (next + 1) % views.len();
                black_box(set.matching("default", black_box(&views[next])).count())
            })
        });
        group.bench_function("view+match", |b| {
            b.iter(|| {
                next = (next + 1) % events.len();
                let view = event_view(black_box(&events[next]));
                black_box(set.matching("default", &view).count())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
