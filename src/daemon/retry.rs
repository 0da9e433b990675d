//! How the daemon lives with a part of itself that fails: it reports the
//! fault (the `/readyz` line, `degraded` and `retries_total`, the log) and
//! tries again after a backoff, for as long as it takes. Beside
//! cilium-agent, in its pod, an exit would make that pod NotReady and hold
//! back Cilium's rollout; so nothing that can come right by itself (a BPF
//! filesystem mounted late, a port freed, an API server back) ends the
//! process.
//!
//! The log says an error once when it appears, again every [`RELOG`] while
//! it stays the same (with the attempts in between), at once when it
//! changes, and once when it clears.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::{Component, Health};
use crate::metrics::Metrics;

/// The first wait after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);

/// The longest wait between two attempts: short enough that a fault that
/// went away is noticed within seconds, and well inside the 60 s after which
/// `/healthz` calls the loop stalled.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// How often an error that stays the same is logged again.
pub const RELOG: Duration = Duration::from_secs(60);

/// Waits that double from [`FIRST_DELAY`] up to [`MAX_DELAY`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The wait before the next attempt; the one after it is twice as long,
    /// up to [`MAX_DELAY`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(MAX_DELAY);
        delay
    }

    /// Back to [`FIRST_DELAY`].
    pub fn reset(&mut self) {
        self.next = FIRST_DELAY;
    }
}

/// Whether an error is logged now: when it is new (none before, or another
/// one), or when the same one was last logged [`RELOG`] ago.
fn due(last: Option<(&str, Instant)>, message: &str, now: Instant) -> bool {
    match last {
        None => true,
        Some((logged, at)) => logged != message || now.saturating_duration_since(at) >= RELOG,
    }
}

/// A fault being retried.
struct Failing {
    message: String,
    /// When `message` was last logged, if this retry logs it.
    logged: Option<Instant>,
    /// Failed attempts since it was last logged.
    unlogged: u64,
    since: Instant,
}

/// The fault of one [`Component`] and its backoff.
pub struct Retry {
    component: Component,
    /// What fails, as the `/readyz` line starts: `datapath`, `kubernetes
    /// source`.
    what: String,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    failing: Option<Failing>,
}

impl Retry {
    pub fn new(
        component: Component,
        what: impl Into<String>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Retry {
        Retry {
            component,
            what: what.into(),
            health,
            metrics,
            backoff: Backoff::default(),
            failing: None,
        }
    }

    /// Whether a failure with `error` now would be logged: what goes with
    /// the log line (libbpf's own messages) goes with it or not at all.
    pub fn would_log(&self, error: &anyhow::Error) -> bool {
        let message = crate::chain::error_chain(error.as_ref());
        due(self.last_logged(), &message, Instant::now())
    }

    fn last_logged(&self) -> Option<(&str, Instant)> {
        self.failing
            .as_ref()
            .and_then(|f| f.logged.map(|at| (f.message.as_str(), at)))
    }

    /// An attempt failed with `error`: report and log it (see the module).
    pub fn failed(&mut self, error: &anyhow::Error) {
        let message = crate::chain::error_chain(error.as_ref());
        let now = Instant::now();
        let log = due(self.last_logged(), &message, now);
        let retry_in_ms = u64::try_from(self.backoff.next.as_millis()).unwrap_or(u64::MAX);
        let component = self.component.label();
        match &self.failing {
            Some(f) if log && f.message == message => {
                let failing_for_s = now.saturating_duration_since(f.since).as_secs();
                tracing::warn!(
                    component,
                    error = %message,
                    attempts = f.unlogged + 1,
                    failing_for_s,
                    retry_in_ms,
                    "still failing; retrying with backoff"
                );
            }
            _ if log => {
                tracing::error!(
                    component,
                    error = %message,
                    retry_in_ms,
                    "failed; retrying with backoff"
                );
            }
            _ => {
                tracing::debug!(component, error = %message, "failed again");
            }
        }
        self.record(message, if log { Some(now) } else { None }, 1);
    }

    /// `attempts` more failures, with `message`, that their owner retries
    /// and has logged itself (the Kubernetes watches): reported, not logged
    /// again.
    pub fn failing_quietly(&mut self, message: String, attempts: u64) {
        self.record(message, None, attempts);
    }

    /// `attempts` failures, the last with `message`; `logged_now` when
    /// this one was logged.
    fn record(&mut self, message: String, logged_now: Option<Instant>, attempts: u64) {
        self.health
            .set_fault(self.component, Some(format!("{}: {message}", self.what)));
        self.metrics.set_degraded(self.component, true);
        self.metrics.add_retries(self.component, attempts);
        let (since, logged, unlogged) = match (self.failing.take(), logged_now) {
            (Some(f), Some(at)) => (f.since, Some(at), 0),
            (Some(f), None) => (f.since, f.logged, f.unlogged + attempts),
            (None, Some(at)) => (at, Some(at), 0),
            (None, None) => (Instant::now(), None, attempts),
        };
        self.failing = Some(Failing {
            message,
            logged,
            unlogged,
            since,
        });
    }

    /// Wait before the next attempt, or until `shutdown`: false when the
    /// daemon is stopping.
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let delay = self.backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = stopped(shutdown) => false,
        }
    }

    /// It works (again): the fault clears, and the log says so if it said
    /// the fault.
    pub fn recovered(&mut self) {
        self.backoff.reset();
        let Some(f) = self.failing.take() else {
            return;
        };
        self.health.set_fault(self.component, None);
        self.metrics.set_degraded(self.component, false);
        if f.logged.is_some() {
            let failed_for_s = f.since.elapsed().as_secs();
            tracing::info!(
                component = self.component.label(),
                failed_for_s,
                "recovered"
            );
        }
    }
}

/// Completes once `shutdown` is true, or its sender is gone (nobody can ask
/// any more: stop as well).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        );
        b.reset();
        assert_eq!(b.next_delay(), FIRST_DELAY);
        assert!(
            MAX_DELAY * 2 < Duration::from_secs(60),
            "inside /healthz's stall"
        );
    }

    #[test]
    fn an_error_is_logged_when_new_changed_or_due_again() {
        let t0 = Instant::now();
        assert!(due(None, "a", t0), "the first");
        assert!(!due(Some(("a", t0)), "a", t0 + Duration::from_secs(59)));
        assert!(due(Some(("a", t0)), "a", t0 + RELOG), "again after RELOG");
        assert!(
            due(Some(("a", t0)), "b", t0 + Duration::from_secs(1)),
            "changed"
        );
    }

    fn retry() -> (Retry, Arc<Health>, Arc<Metrics>) {
        let health = Arc::new(Health::default());
        let metrics =
            Arc::new(Metrics::new(crate::source::SourceStats::new()).expect("registering"));
        (
            Retry::new(
                Component::Datapath,
                "datapath",
                health.clone(),
                metrics.clone(),
            ),
            health,
            metrics,
        )
    }

    fn scrape(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render().expect("render")).expect("utf-8")
    }

    #[test]
    fn a_fault_is_a_readyz_line_and_a_metric_until_it_clears() {
        let (mut retry, health, metrics) = retry();
        let before = scrape(&metrics);
        assert!(
            before.contains("cilium_mcast_egress_degraded{component=\"datapath\"} 0"),
            "{before}"
        );
        let error =
            anyhow::anyhow!("/x is not on a BPF filesystem").context("loading the datapath");
        assert!(retry.would_log(&error));
        retry.failed(&error);
        assert!(
            !retry.would_log(&error),
            "the same error is not logged twice"
        );
        retry.failed(&error);
        assert_eq!(
            health.not_ready()[0],
            "datapath: loading the datapath: /x is not on a BPF filesystem"
        );
        let during = scrape(&metrics);
        assert!(
            during.contains("cilium_mcast_egress_degraded{component=\"datapath\"} 1"),
            "{during}"
        );
        assert!(
            during.contains("cilium_mcast_egress_retries_total{component=\"datapath\"} 2"),
            "{during}"
        );
        assert!(
            during.contains("cilium_mcast_egress_degraded{component=\"source\"} 0"),
            "other components unaffected: {during}"
        );
        // Another error is new: logged.
        assert!(retry.would_log(&anyhow::anyhow!("another")));

        retry.recovered();
        assert!(
            !health.not_ready().iter().any(|l| l.starts_with("datapath")),
            "{:?}",
            health.not_ready()
        );
        let after = scrape(&metrics);
        assert!(
            after.contains("cilium_mcast_egress_degraded{component=\"datapath\"} 0"),
            "{after}"
        );
        assert!(
            after.contains("cilium_mcast_egress_retries_total{component=\"datapath\"} 2"),
            "a counter keeps its count: {after}"
        );
        assert!(
            retry.would_log(&error),
            "after recovery, the error is new again"
        );
    }

    #[test]
    fn quiet_failures_count_every_attempt_and_keep_their_line() {
        let (mut retry, health, metrics) = retry();
        retry.failing_quietly("watch of CiliumNode failing: refused".into(), 3);
        retry.failing_quietly("watch of CiliumNode failing: refused".into(), 2);
        assert_eq!(
            health.not_ready()[0],
            "datapath: watch of CiliumNode failing: refused"
        );
        assert!(scrape(&metrics)
            .contains("cilium_mcast_egress_retries_total{component=\"datapath\"} 5"));
        retry.recovered();
        assert!(health.not_ready().iter().all(|l| !l.contains("refused")));
    }

    #[tokio::test]
    async fn a_wait_ends_early_on_shutdown() {
        let (mut retry, _, _) = retry();
        for _ in 0..8 {
            retry.backoff.next_delay();
        }
        let (stop, mut shutdown) = watch::channel(false);
        stop.send(true).expect("receiver alive");
        let started = std::time::Instant::now();
        assert!(!retry.wait(&mut shutdown).await, "stopping");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
