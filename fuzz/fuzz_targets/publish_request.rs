//! Protobuf request decoding into the model: arbitrary bytes decoded as a
//! `PublishRequest`, then what the broker does with each event before it
//! is stored (validation, the JSON view patterns match, routing, the
//! partition choice, the stored encoding). Errors are fine, panics are
//! not, and the stored encoding must read back as what was stored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;
use switchyard_broker::model::{EventLimits, StoredEvent, partition_for, validate_event};
use switchyard_broker::rules::{RuleSet, event_view, parse_rules};
use switchyard_proto::v1::PublishRequest;

const RULES: &str = r#"
rules:
  - name: orders
    pattern: {type: [{prefix: order.}], data: {total: [{numeric: [">", 10]}]}}
    targets: [{topic: orders}]
  - name: by-subject
    pattern: {subject: [{wildcard: "a*b"}], $or: [{source: [/x]}, {data: {ip: [{cidr: 10.0.0.0/8}]}}]}
    targets: [{topic: audit}]
"#;

fn rules() -> &'static RuleSet {
    static RULES_SET: OnceLock<RuleSet> = OnceLock::new();
    RULES_SET.get_or_init(|| {
        let rules = parse_rules(RULES, std::path::Path::new("fuzz.yaml")).expect("rules parse");
        RuleSet::from_rules(rules, &[]).expect("rules compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PublishRequest::decode(data) else {
        return;
    };
    let limits = EventLimits {
        max_data_bytes: 1024 * 1024,
        max_extensions: 64,
        max_attribute_bytes: 4096,
    };
    for event in &request.events {
        if validate_event(event, &limits).is_err() {
            continue;
        }
        let view = event_view(event);
        let routes = rules().route(&request.bus, &view);
        let _ = partition_for(event, 7);
        let stored = StoredEvent::encode(event, &request.bus, &[]);
        let back = StoredEvent::from_bytes(&stored).expect("stored records decode");
        assert_eq!(back.event.as_ref(), Some(event), "stored event reads back");
        drop(routes);
    }
});
