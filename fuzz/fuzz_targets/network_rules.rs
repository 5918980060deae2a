//! Rules YAML as it arrives over the network (`DryRunRules`): the size and
//! depth bounds, then the parser and compiler. Errors are fine, panics are
//! not, and nothing nested deeper than the bound reaches the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_broker::rules::{
    MAX_UNTRUSTED_RULES_DEPTH, RuleSet, nested_deeper_than, parse_untrusted_rules,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_untrusted_rules(text, "candidate rules");
    if nested_deeper_than(text, MAX_UNTRUSTED_RULES_DEPTH).is_some() {
        assert!(parsed.is_err(), "too deep, yet parsed");
    }
    if let Ok(rules) = parsed {
        let _ = RuleSet::from_rules(rules, &[]);
    }
});
