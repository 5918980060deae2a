//! The broker config loader on arbitrary text: parsing and validation
//! may refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use switchyard_broker::config::BrokerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = BrokerConfig::parse(text, Path::new("fuzz.yaml")) {
        let _ = config.validate(Path::new("fuzz.yaml"));
    }
});
