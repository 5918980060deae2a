//! Per-principal quotas (`auth.tokens[].quota`, `auth.quotas`): publish rate in events/s
//! and bytes/s (token buckets holding one second's worth) and concurrent
//! Subscribe streams. Over quota → RESOURCE_EXHAUSTED with a
//! `retry-after-ms` hint the SDK honours.

use super::auth::Principal;
use crate::config::{AuthConfig, QuotaConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Status;

/// A refilling allowance of `rate` per second, holding at most one
/// second's worth.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    /// Takes `cost`, or says how long until it could.
    fn take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(cost));
        self.at = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - self.tokens) / self.rate))
        }
    }
}

#[derive(Debug, Default)]
struct Usage {
    events: Option<Bucket>,
    bytes: Option<Bucket>,
    streams: u32,
}

/// The quotas of every principal and what each has used.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: HashMap<String, QuotaConfig>,
    usage: Mutex<HashMap<String, Usage>>,
}

/// An open Subscribe stream counted against its principal; dropping it
/// gives the slot back.
#[derive(Debug)]
pub struct StreamPermit {
    quotas: Arc<Quotas>,
    principal: Option<String>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some(principal) = &self.principal
            && let Ok(mut usage) = self.quotas.usage.lock()
            && let Some(usage) = usage.get_mut(principal)
        {
            usage.streams = usage.streams.saturating_sub(1);
        }
    }
}

/// RESOURCE_EXHAUSTED with a retry hint.
fn exhausted(message: String, retry_after: Option<Duration>) -> Status {
    let mut status = Status::resource_exhausted(message);
    if let Some(after) = retry_after
        && let Ok(value) = (after.as_millis().max(1) as u64).to_string().parse()
    {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

impl Quotas {
    /// From the tokens' `quota` entries and `auth.quotas` (which wins).
    pub fn new(auth: &AuthConfig) -> Quotas {
        let by_token = auth
            .tokens
            .iter()
            .filter_map(|t| Some((t.principal.clone(), t.quota.clone()?)));
        let by_name = auth.quotas.iter().map(|(p, q)| (p.clone(), q.clone()));
        Quotas {
            limits: by_token.chain(by_name).collect(),
            usage: Mutex::default(),
        }
    }

    /// Charges a publish of `events` events and `bytes()` bytes (measured
    /// only for principals with a bytes/s quota: it walks the request).
    pub fn charge_publish(
        &self,
        principal: Option<&Principal>,
        events: usize,
        bytes: impl FnOnce() -> usize,
    ) -> Result<(), Status> {
        let Some((name, limits)) = principal.and_then(|p| Some((&p.0, self.limits.get(&p.0)?)))
        else {
            return Ok(());
        };
        let mut usage = self
            .usage
            .lock()
            .map_err(|_| Status::internal("quota state poisoned"))?;
        let usage = usage.entry(name.clone()).or_default();
        let now = Instant::now();
        let bytes = limits.bytes_per_second.map_or(0, |_| bytes());
        for (rate, bucket, cost, unit) in [
            (
                limits.events_per_second,
                &mut usage.events,
                events as f64,
                "events",
            ),
            (
                limits.bytes_per_second,
                &mut usage.bytes,
                bytes as f64,
                "bytes",
            ),
        ] {
            let Some(rate) = rate else { continue };
            let bucket = bucket.get_or_insert_with(|| Bucket::new(rate));
            if let Err(wait) = bucket.take(cost, now) {
                return Err(exhausted(
                    format!(
                        "principal '{name}' is over its publish quota of {rate} {unit}/s; retry in {} ms",
                        wait.as_millis().max(1)
                    ),
                    Some(wait),
                ));
            }
        }
        Ok(())
    }

    /// Counts a new Subscribe stream against its principal.
    pub fn open_stream(
        self: &Arc<Self>,
        principal: Option<&Principal>,
    ) -> Result<StreamPermit, Status> {
        let limited =
            principal.and_then(|p| Some((p.0.clone(), self.limits.get(&p.0)?.max_streams?)));
        let Some((name, max)) = limited else {
            return Ok(StreamPermit {
                quotas: Arc::clone(self),
                principal: None,
            });
        };
        let mut usage = self
            .usage
            .lock()
            .map_err(|_| Status::internal("quota state poisoned"))?;
        let usage = usage.entry(name.clone()).or_default();
        if usage.streams >= max {
            return Err(exhausted(
                format!(
                    "principal '{name}' already has its maximum of {max} open Subscribe streams; close one first"
                ),
                None,
            ));
        }
        usage.streams += 1;
        Ok(StreamPermit {
            quotas: Arc::clone(self),
            principal: Some(name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn quotas() -> Arc<Quotas> {
        Arc::new(Quotas::new(&AuthConfig {
            tokens: vec![TokenConfig {
                principal: "orders".into(),
                sha256: String::new(),
                quota: Some(QuotaConfig {
                    events_per_second: Some(10.0),
                    bytes_per_second: None,
                    max_streams: Some(1),
                }),
                expires: None,
            }],
            ..AuthConfig::default()
        }))
    }

    #[test]
    fn publish_rates_refill_and_say_when_to_retry() {
        let quotas = quotas();
        let orders = Principal("orders".into());
        quotas
            .charge_publish(Some(&orders), 10, || 0)
            .expect("a second's worth");
        let status = quotas
            .charge_publish(Some(&orders), 5, || 0)
            .expect_err("over");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let hint: u64 = status
            .metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("hint");
        assert!(
            (400..=500).contains(&hint),
            "5 events at 10/s: ~500 ms, got {hint}"
        );
        assert!(
            quotas
                .charge_publish(Some(&Principal("other".into())), 1000, || 0)
                .is_ok(),
            "no quota"
        );
        assert!(quotas.charge_publish(None, 1000, || 0).is_ok(), "no auth");
        let mut bucket = Bucket::new(10.0);
        let start = Instant::now();
        bucket.take(10.0, start).expect("full");
        assert!(bucket.take(1.0, start).is_err());
        bucket
            .take(5.0, start + Duration::from_millis(500))
            .expect("refilled");
    }

    #[test]
    fn streams_are_counted_and_given_back() {
        let quotas = quotas();
        let orders = Principal("orders".into());
        let first = quotas.open_stream(Some(&orders)).expect("first");
        let second = quotas.open_stream(Some(&orders)).expect_err("over");
        assert!(
            second.message().contains("maximum of 1"),
            "{}",
            second.message()
        );
        drop(first);
        quotas.open_stream(Some(&orders)).expect("given back");
    }

    #[test]
    fn quotas_by_name_cover_certificate_principals_and_override_tokens() {
        let quota = |events| QuotaConfig {
            events_per_second: Some(events),
            ..QuotaConfig::default()
        };
        let quotas = Quotas::new(&AuthConfig {
            tokens: vec![TokenConfig {
                principal: "orders".into(),
                sha256: String::new(),
                quota: Some(quota(100.0)),
                expires: None,
            }],
            quotas: [
                ("orders".to_string(), quota(2.0)),
                ("cert-service".to_string(), quota(1.0)),
            ]
            .into(),
            ..AuthConfig::default()
        });
        let charge =
            |name: &str, events| quotas.charge_publish(Some(&Principal(name.into())), events, || 0);
        charge("orders", 2).expect("two a second");
        assert!(
            charge("orders", 1).is_err(),
            "auth.quotas wins over the token's"
        );
        charge("cert-service", 1).expect("one a second");
        let refused = charge("cert-service", 1).expect_err("over");
        assert!(
            refused.message().contains("cert-service"),
            "{}",
            refused.message()
        );
    }
}
