//! The YAML rules loader on arbitrary text: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use switchyard_broker::rules::{RuleSet, parse_rules};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = parse_rules(text, Path::new("fuzz.yaml")) {
        let _ = RuleSet::from_rules(rules, &[]);
    }
});
