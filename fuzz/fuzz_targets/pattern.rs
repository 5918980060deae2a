//! The pattern parser and compiler on arbitrary JSON, then the compiled
//! pattern on an event: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_broker::rules::Pattern;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(pattern) = Pattern::compile(&json) {
        // Match the pattern against its own JSON and a typical event.
        let _ = pattern.matches(&json);
        let event = serde_json::json!({
            "type": "order.placed", "source": "/shop", "id": "1",
            "data": {"total": 12.5, "region": "us-east-1", "tags": ["a", "b"], "ip": "10.0.0.1",
                     "items": [{"sku": "x", "qty": 1}], "none": null, "flag": true}
        });
        let _ = pattern.matches(&event);
        let _ = pattern.explain(&event);
    }
});
