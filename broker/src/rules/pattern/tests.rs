//! Operator semantics, with the examples of EventBridge's documentation,
//! positive and negative.

use super::*;
use serde_json::json;

fn matches(pattern: Value, event: Value) -> bool {
    Pattern::compile(&pattern)
        .expect("valid pattern")
        .matches(&event)
}

fn error(pattern: Value) -> String {
    Pattern::compile(&pattern)
        .expect_err("invalid pattern")
        .to_string()
}

#[test]
fn exact_values_of_every_type() {
    assert!(matches(json!({"a": ["x"]}), json!({"a": "x"})));
    assert!(!matches(json!({"a": ["x"]}), json!({"a": "X"})));
    assert!(matches(json!({"a": [5]}), json!({"a": 5.0})));
    assert!(!matches(json!({"a": ["5"]}), json!({"a": 5})));
    assert!(matches(json!({"a": [true]}), json!({"a": true})));
    assert!(matches(json!({"UserID": [null]}), json!({"UserID": null})));
    assert!(!matches(json!({"UserID": [null]}), json!({})));
    assert!(matches(json!({"LastName": [""]}), json!({"LastName": ""})));
    assert!(!matches(
        json!({"LastName": [""]}),
        json!({"LastName": "Doe"})
    ));
}

#[test]
fn every_field_must_match_and_nesting_works() {
    let pattern = json!({"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"], "detail": {"state": ["terminated"]}});
    let event = json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {"state": "terminated", "x": 1}});
    assert!(matches(pattern.clone(), event));
    assert!(!matches(
        pattern.clone(),
        json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {"state": "running"}})
    ));
    assert!(!matches(
        pattern,
        json!({"source": "aws.ec2", "detail": {"state": "terminated"}})
    ));
}

#[test]
fn arrays_in_the_event_match_if_any_element_matches() {
    assert!(matches(
        json!({"resources": ["arn:1"]}),
        json!({"resources": ["arn:0", "arn:1"]})
    ));
    assert!(!matches(
        json!({"resources": ["arn:1"]}),
        json!({"resources": []})
    ));
    assert!(matches(
        json!({"items": {"sku": ["a"]}}),
        json!({"items": [{"sku": "b"}, {"sku": "a"}]})
    ));
    // A nested pattern must match one element as a whole.
    let pattern = json!({"items": {"sku": ["a"], "qty": [1]}});
    assert!(!matches(
        pattern.clone(),
        json!({"items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]})
    ));
    assert!(matches(
        pattern,
        json!({"items": [{"sku": "b", "qty": 1}, {"sku": "a", "qty": 1}]})
    ));
}

#[test]
fn prefix_and_suffix() {
    assert!(matches(
        json!({"time": [{"prefix": "2017-10-02"}]}),
        json!({"time": "2017-10-02T18:43:48Z"})
    ));
    assert!(!matches(
        json!({"time": [{"prefix": "2017-10-02"}]}),
        json!({"time": "2017-10-03T18:43:48Z"})
    ));
    assert!(
        !matches(json!({"n": [{"prefix": "1"}]}), json!({"n": 12})),
        "numbers are not strings"
    );
    let ignore_case =
        json!({"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}});
    for service in ["EventBridge", "EVENTB", "eventbus"] {
        assert!(
            matches(ignore_case.clone(), json!({"detail": {"service": service}})),
            "{service}"
        );
    }
    assert!(!matches(
        ignore_case,
        json!({"detail": {"service": "Event"}})
    ));
    assert!(matches(
        json!({"FileName": [{"suffix": ".png"}]}),
        json!({"FileName": "cat.png"})
    ));
    assert!(!matches(
        json!({"FileName": [{"suffix": ".png"}]}),
        json!({"FileName": "cat.PNG"})
    ));
    assert!(matches(
        json!({"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}),
        json!({"FileName": "cat.PNG"})
    ));
}

#[test]
fn equals_ignore_case() {
    let pattern = json!({"name": [{"equals-ignore-case": "alice"}]});
    assert!(matches(pattern.clone(), json!({"name": "ALICE"})));
    assert!(matches(pattern.clone(), json!({"name": "Alice"})));
    assert!(!matches(pattern, json!({"name": "Alicia"})));
}

#[test]
fn wildcard() {
    let pattern = json!({"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]});
    assert!(matches(
        pattern.clone(),
        json!({"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/orders"})
    ));
    assert!(!matches(
        pattern,
        json!({"EventBusArn": "arn:aws:events:eu-west-1:123456789012:event-bus/orders"})
    ));
    assert!(matches(
        json!({"k": [{"wildcard": r"a\*b"}]}),
        json!({"k": "a*b"})
    ));
    assert!(!matches(
        json!({"k": [{"wildcard": r"a\*b"}]}),
        json!({"k": "axb"})
    ));
    assert!(error(json!({"k": [{"wildcard": "a**"}]})).contains("consecutive"));
}

#[test]
fn anything_but() {
    let state = |p: Value, s: Value| {
        matches(
            json!({"detail": {"state": [p]}}),
            json!({"detail": {"state": s}}),
        )
    };
    assert!(state(
        json!({"anything-but": "initializing"}),
        json!("running")
    ));
    assert!(!state(
        json!({"anything-but": "initializing"}),
        json!("initializing")
    ));
    assert!(state(json!({"anything-but": 123}), json!(124)));
    assert!(!state(json!({"anything-but": 123}), json!(123)));
    assert!(state(
        json!({"anything-but": ["stopped", "overloaded"]}),
        json!("running")
    ));
    assert!(!state(
        json!({"anything-but": ["stopped", "overloaded"]}),
        json!("stopped")
    ));
    assert!(state(
        json!({"anything-but": {"prefix": "init"}}),
        json!("running")
    ));
    assert!(!state(
        json!({"anything-but": {"prefix": "init"}}),
        json!("initializing")
    ));
    assert!(state(
        json!({"anything-but": {"suffix": ".txt"}}),
        json!("a.png")
    ));
    assert!(!state(
        json!({"anything-but": {"suffix": ".txt"}}),
        json!("a.txt")
    ));
    assert!(!state(
        json!({"anything-but": {"equals-ignore-case": ["initializing", "stopped"]}}),
        json!("STOPPED")
    ));
    assert!(state(
        json!({"anything-but": {"equals-ignore-case": ["initializing", "stopped"]}}),
        json!("running")
    ));
    assert!(!state(
        json!({"anything-but": {"wildcard": "*/lib/*"}}),
        json!("/usr/lib/x")
    ));
    assert!(state(
        json!({"anything-but": {"wildcard": "*/lib/*"}}),
        json!("/usr/bin/x")
    ));
    // A missing field is not "anything but": it has no value at all.
    assert!(!matches(
        json!({"state": [{"anything-but": "x"}]}),
        json!({})
    ));
    // Arrays: some element is not excluded.
    assert!(matches(
        json!({"s": [{"anything-but": "x"}]}),
        json!({"s": ["x", "y"]})
    ));
    assert!(!matches(
        json!({"s": [{"anything-but": "x"}]}),
        json!({"s": ["x"]})
    ));
    assert!(
        error(json!({"s": [{"anything-but": ["a", 1]}]})).contains("only strings or only numbers")
    );
    assert!(
        error(json!({"s": [{"anything-but": {"numeric": [">", 1]}}]})).contains("combines with")
    );
}

#[test]
fn numeric() {
    let pattern = json!({"detail": {
        "c-count": [{"numeric": [">", 0, "<=", 5]}],
        "d-count": [{"numeric": ["<", 10]}],
        "x-limit": [{"numeric": ["=", 3.018e2]}]
    }});
    assert!(matches(
        pattern.clone(),
        json!({"detail": {"c-count": 5, "d-count": 7, "x-limit": 301.8}})
    ));
    assert!(!matches(
        pattern.clone(),
        json!({"detail": {"c-count": 0, "d-count": 7, "x-limit": 301.8}})
    ));
    assert!(!matches(
        pattern.clone(),
        json!({"detail": {"c-count": 5, "d-count": 10, "x-limit": 301.8}})
    ));
    assert!(!matches(
        pattern,
        json!({"detail": {"c-count": 5, "d-count": 7, "x-limit": 301.9}})
    ));
    assert!(matches(
        json!({"t": [{"numeric": [">=", -10.5, "<", -1]}]}),
        json!({"t": -10.5})
    ));
    assert!(!matches(
        json!({"t": [{"numeric": [">=", -10.5, "<", -1]}]}),
        json!({"t": -1})
    ));
    assert!(
        !matches(json!({"t": [{"numeric": [">", 1]}]}), json!({"t": "5"})),
        "strings are not compared"
    );
    assert!(error(json!({"t": [{"numeric": [">", 5, "<", 1]}]})).contains("lower bound"));
    assert!(error(json!({"t": [{"numeric": [">", 1, ">", 2]}]})).contains("twice"));
    assert!(error(json!({"t": [{"numeric": ["~", 1]}]})).contains("numeric"));
}

#[test]
fn cidr() {
    let pattern = json!({"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}});
    assert!(matches(
        pattern.clone(),
        json!({"detail": {"source-ip": "10.0.0.255"}})
    ));
    assert!(!matches(
        pattern,
        json!({"detail": {"source-ip": "10.0.1.1"}})
    ));
    assert!(matches(
        json!({"ip": [{"cidr": "2001:db8::/32"}]}),
        json!({"ip": "2001:db8::1"})
    ));
    assert!(error(json!({"ip": [{"cidr": "10.0.0.0/40"}]})).contains("prefix longer"));
}

#[test]
fn exists_works_on_leaves_objects_and_missing_keys() {
    let exists =
        |e: bool, event: Value| matches(json!({"detail": {"state": [{"exists": e}]}}), event);
    assert!(exists(true, json!({"detail": {"state": "x"}})));
    assert!(
        exists(true, json!({"detail": {"state": null}})),
        "null is a value"
    );
    assert!(!exists(true, json!({"detail": {}})));
    assert!(
        !exists(true, json!({"detail": {"state": {"nested": 1}}})),
        "objects are not leaves"
    );
    assert!(exists(false, json!({"detail": {}})));
    assert!(
        exists(false, json!({})),
        "a missing parent means a missing leaf"
    );
    assert!(exists(false, json!({"detail": {"state": {"nested": 1}}})));
    assert!(
        exists(false, json!({"detail": {"state": []}})),
        "an empty array has no leaf"
    );
    assert!(!exists(false, json!({"detail": {"state": "x"}})));
}

#[test]
fn or_combines_alternatives() {
    let pattern = json!({"source": ["shop"], "$or": [
        {"c-count": [{"numeric": [">", 0, "<=", 5]}]},
        {"d-count": [{"numeric": ["<", 10]}]},
        {"x-limit": [{"numeric": ["=", 3.018e2]}]}
    ]});
    assert!(matches(
        pattern.clone(),
        json!({"source": "shop", "d-count": 3})
    ));
    assert!(matches(
        pattern.clone(),
        json!({"source": "shop", "x-limit": 301.8})
    ));
    assert!(!matches(
        pattern.clone(),
        json!({"source": "shop", "c-count": 9})
    ));
    assert!(!matches(pattern, json!({"source": "other", "d-count": 3})));
    assert!(error(json!({"$or": [{"a": [1]}]})).contains("between 2"));
}

#[test]
fn invalid_patterns_are_errors_with_paths() {
    assert!(error(json!({})).contains("empty pattern"));
    assert!(error(json!([])).contains("must be an object"));
    assert!(error(json!({"data": {"n": 5}})).starts_with("pattern.data.n:"));
    assert!(error(json!({"a": []})).contains("empty list"));
    assert!(error(json!({"a": [{"contains": "x"}]})).contains("unknown operator \"contains\""));
    assert!(error(json!({"a": [{"prefix": "x", "suffix": "y"}]})).contains("exactly one key"));
    assert!(error(json!({"a": [{"prefix": 5}]})).contains("takes a string"));
    assert!(error(json!({"a": [{"exists": "yes"}]})).contains("true or false"));
    assert!(error(json!({"a": [[1]]})).contains("lists of lists"));
    let deep = (0..12).fold(json!(["x"]), |inner, _| json!({"k": inner}));
    assert!(error(deep).contains("nest at most"));
    let big: Vec<String> = (0..400).map(|i| format!("value-{i}")).collect();
    assert!(error(json!({"a": big})).contains("bytes of JSON"));
}

#[test]
fn explain_says_which_field_failed_and_why() {
    let pattern = Pattern::compile(
        &json!({"type": ["order.placed"], "data": {"total": [{"numeric": [">", 100]}]}}),
    )
    .expect("valid");
    let lines = pattern.explain(&json!({"type": "order.placed", "data": {"total": 50}}));
    let line = |lines: &[Explanation], path: &str| {
        lines.iter().find(|l| l.path == path).cloned().expect(path)
    };
    assert_eq!(lines.len(), 2);
    assert!(line(&lines, "type").matched);
    let total = line(&lines, "data.total");
    assert!(!total.matched);
    assert!(total.detail.contains("50"), "{}", total.detail);
    let missing = pattern.explain(&json!({"type": "order.placed"}));
    assert!(line(&missing, "data.total").detail.contains("missing"));
}

/// A pattern of `levels` nested objects, e.g. 2: `{"f1": {"f2": ["x"]}}`.
fn nested(levels: usize) -> Value {
    (1..=levels).rev().fold(
        json!(["x"]),
        |inner, level| json!({ format!("f{level}"): inner }),
    )
}

#[test]
fn every_pattern_limit_holds_at_the_limit_and_refuses_one_more() {
    assert!(
        Pattern::compile(&nested(MAX_DEPTH)).is_ok(),
        "at the depth limit"
    );
    let error = Pattern::compile(&nested(MAX_DEPTH + 1)).expect_err("one level more");
    assert!(error.to_string().contains("at most 10 levels"), "{error}");

    let sized = |bytes: usize| json!({ "type": ["x".repeat(bytes - r#"{"type":[""]}"#.len())] });
    assert_eq!(
        sized(MAX_PATTERN_BYTES).to_string().len(),
        MAX_PATTERN_BYTES
    );
    assert!(
        Pattern::compile(&sized(MAX_PATTERN_BYTES)).is_ok(),
        "at the size limit"
    );
    let error = Pattern::compile(&sized(MAX_PATTERN_BYTES + 1)).expect_err("one byte more");
    assert!(error.to_string().contains("4097 bytes"), "{error}");

    let values = |n: usize| json!({ "n": (0..n).collect::<Vec<_>>() });
    assert!(
        Pattern::compile(&values(MAX_VALUES)).is_ok(),
        "at the values limit"
    );
    let error = Pattern::compile(&values(MAX_VALUES + 1)).expect_err("one value more");
    assert!(error.to_string().contains("at most 256 values"), "{error}");

    let alternatives =
        |n: usize| json!({ "$or": (0..n).map(|i| json!({ "n": [i] })).collect::<Vec<_>>() });
    assert!(
        Pattern::compile(&alternatives(MAX_OR_ALTERNATIVES)).is_ok(),
        "at the $or limit"
    );
    let error = Pattern::compile(&alternatives(MAX_OR_ALTERNATIVES + 1)).expect_err("one more");
    assert!(error.to_string().contains("between 2 and 256"), "{error}");
}
