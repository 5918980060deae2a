//! What the bench binaries share: the broker's allocator, flag parsing and
//! an in-process broker. Each bench uses part of it.

#![allow(dead_code)]

/// The same allocator as the `switchyard` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The size of a bench event's data.
pub(crate) const EVENT_BYTES: usize = 1024;

/// Wall-clock nanoseconds since the Unix epoch: events carry it, so that
/// the receiver (in the same process) can compute publish→deliver latency.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Prints one scenario's rate and publish→deliver percentiles (the
/// histogram holds microseconds).
pub(crate) fn report(
    name: &str,
    events: u64,
    elapsed: std::time::Duration,
    histogram: &hdrhistogram::Histogram<u64>,
) {
    println!(
        "{name}: {events} events of {EVENT_BYTES} B in {:.2} s = {:.0} events/s; publish→deliver p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.value_at_quantile(0.999) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
    );
}

/// The value of `--name N` on the command line, or `default`.
pub(crate) fn flag(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(default)
}

/// A broker served in-process for a bench, with its data in a temporary
/// directory that outlives it: [`BenchBroker::stop`] shuts the broker down
/// (flushing offsets and closing the log) before the directory goes.
pub(crate) struct BenchBroker {
    /// Its gRPC address, `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), switchyard_broker::server::StartError>>,
    _dir: tempfile::TempDir,
}

impl BenchBroker {
    /// Opens `config` with its `data_dir` in `dir` and serves it on an
    /// ephemeral port.
    pub(crate) async fn start(
        mut config: switchyard_broker::config::BrokerConfig,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<BenchBroker> {
        config.data_dir = dir.path().join("data");
        let broker = switchyard_broker::server::Broker::open(config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(broker.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(BenchBroker {
            url,
            stop,
            served,
            _dir: dir,
        })
    }

    /// Shuts the broker down (after the bench's clients are dropped, or it
    /// waits for their connections up to the drain deadline).
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.served.await??;
        Ok(())
    }
}
