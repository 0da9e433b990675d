use http_body_util::BodyExt;

use super::*;
use crate::metrics::tests::{add_unencodable_family, metrics, FakeMaps};

async fn get(metrics: Metrics, path: &str) -> (StatusCode, String) {
    let req = Request::get(path).body(()).unwrap();
    let resp = handle(Arc::new(Health::default()), Arc::new(metrics), req)
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn readyz(health: Health) -> (StatusCode, String) {
    let req = Request::get("/readyz").body(()).unwrap();
    let resp = handle(
        Arc::new(health),
        Arc::new(metrics(FakeMaps::default())),
        req,
    )
    .await
    .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Clocks a test moves by hand.
struct FakeClock {
    base_wall: SystemTime,
    base_mono: Instant,
    /// Signed seconds added to the wall clock (its jumps).
    wall_offset: std::sync::atomic::AtomicI64,
    /// Seconds the monotonic clock has advanced.
    elapsed: AtomicU64,
}

impl FakeClock {
    fn new() -> Arc<FakeClock> {
        Arc::new(FakeClock {
            base_wall: SystemTime::now(),
            base_mono: Instant::now(),
            wall_offset: 0.into(),
            elapsed: 0.into(),
        })
    }
    /// Real time passing moves both clocks.
    fn pass(&self, secs: u64) {
        self.elapsed.fetch_add(secs, Ordering::Relaxed);
    }
    /// The wall clock stepped; the monotonic clock did not move.
    fn jump_wall(&self, secs: i64) {
        self.wall_offset.fetch_add(secs, Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn wall(&self) -> SystemTime {
        let elapsed = self.elapsed.load(Ordering::Relaxed);
        let off = self.wall_offset.load(Ordering::Relaxed);
        let t = self.base_wall + Duration::from_secs(elapsed);
        if off >= 0 {
            t + Duration::from_secs(off.unsigned_abs())
        } else {
            t - Duration::from_secs(off.unsigned_abs())
        }
    }
    fn monotonic(&self) -> Instant {
        self.base_mono + Duration::from_secs(self.elapsed.load(Ordering::Relaxed))
    }
}

#[test]
fn healthz_ignores_wall_clock_jumps() {
    let clock = FakeClock::new();
    let health = Health::with_clock(clock.clone());
    health.mark_pass();
    assert!(health.alive());

    // The wall clock jumps an hour ahead while the loop keeps turning:
    // still alive (a wall-clock check would now see a 1 h stall).
    clock.pass(1);
    clock.jump_wall(3600);
    assert!(health.alive(), "a forward wall-clock step is not a stall");
    health.mark_pass();

    // It jumps back a day, then the loop stalls: the stall is seen
    // after 60 s of real time (a wall-clock check would wait a day).
    clock.jump_wall(-86_400);
    clock.pass(30);
    assert!(health.alive());
    clock.pass(31);
    assert!(
        !health.alive(),
        "a stalled loop is seen despite the step back"
    );

    // Positive control: a pass makes it alive again.
    health.mark_pass();
    assert!(health.alive());
}

#[tokio::test]
async fn readyz_names_every_reason_and_the_unknown_node() {
    let health = Health::default();
    assert_eq!(
        readyz(health).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first sync not done\nlinks missing\n".to_string()
        )
    );

    let health = Health::default();
    health.set_synced(true);
    health.set_links_complete(true);
    health.set_node_unknown(Some("no CiliumNode is named \"node-x\"".into()));
    assert!(!health.ready());
    assert_eq!(
        readyz(health).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no CiliumNode is named \"node-x\"\n".to_string()
        )
    );

    let health = Health::default();
    health.set_synced(true);
    health.set_links_complete(true);
    health.set_node_unknown(Some("gone".into()));
    health.set_node_unknown(None);
    assert!(health.ready());
    assert_eq!(readyz(health).await, (StatusCode::OK, "ok\n".to_string()));
}

/// A part of the daemon that fails is a `/readyz` line of its own, first,
/// until it clears; `/healthz` does not change with it: a daemon that
/// retries is alive.
#[tokio::test]
async fn readyz_names_the_failing_parts_first_and_healthz_ignores_them() {
    let ready = || {
        let h = Health::default();
        h.set_synced(true);
        h.set_links_complete(true);
        h
    };
    let health = ready();
    health.set_fault(
        Component::Source,
        Some("kubernetes source: watch of CiliumNode failing: refused".into()),
    );
    health.set_fault(
        Component::Datapath,
        Some("datapath: /sys/fs/bpf is not on a BPF filesystem".into()),
    );
    health.set_synced(false);
    assert!(health.alive(), "retrying is alive");
    assert_eq!(
        readyz(health).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "datapath: /sys/fs/bpf is not on a BPF filesystem\n\
             kubernetes source: watch of CiliumNode failing: refused\n\
             first sync not done\n"
                .to_string()
        )
    );

    let health = ready();
    health.set_fault(Component::Http, Some("metrics endpoint: taken".into()));
    assert!(!health.ready());
    health.set_fault(Component::Http, None);
    assert!(health.ready(), "{:?}", health.not_ready());
    assert_eq!(readyz(health).await, (StatusCode::OK, "ok\n".to_string()));
}

fn problem(subject: Subject, severity: Severity, message: &str) -> Problem {
    Problem {
        subject,
        severity,
        message: message.to_string(),
    }
}

#[test]
fn report_counts_and_lists_the_findings() {
    let problems = [
        problem(Subject::Node("node-x".into()), Severity::Invalid, "no node"),
        problem(Subject::Policy("a".into()), Severity::Invalid, "bad prefix"),
        problem(Subject::Policy("a".into()), Severity::Invalid, "bad rule"),
        problem(Subject::Policy("b".into()), Severity::Warning, "overlap"),
        problem(Subject::Endpoints, Severity::Warning, "3 CiliumEndpoints"),
    ];
    let report = Report::new(vec!["why".into()], &problems, 3);
    assert!(!report.ready);
    assert!(report.node_missing);
    assert_eq!(report.invalid_policies, 1);
    assert_eq!(report.endpoints_without_identity, 3);
    assert_eq!(report.problems.len(), 5);
    assert_eq!(
        report.problems[0],
        ReportedProblem {
            kind: "node".into(),
            name: "node-x".into(),
            severity: "invalid".into(),
            message: "no node".into(),
        }
    );
    assert_eq!(report.problems[4].kind, "endpoints");
    assert_eq!(report.problems[4].name, "");

    let decoded = Report::decode(&report.encode().unwrap()).unwrap();
    assert_eq!(decoded, report);
    let mut later = decoded.clone();
    later.since_unix_ns = 42;
    assert!(later.same_as(&report));
    later.endpoints_without_identity = 4;
    assert!(!later.same_as(&report));
}

#[test]
fn report_stays_within_its_map_value() {
    // Ten thousand invalid policies with long messages: the report
    // lists a bounded number, cut, and counts the rest.
    let long = "x".repeat(5000);
    let problems: Vec<Problem> = (0..10_000)
        .map(|i| {
            problem(
                Subject::Policy(format!("p{i:05}")),
                Severity::Invalid,
                &long,
            )
        })
        .collect();
    let report = Report::new(Vec::new(), &problems, 0);
    assert_eq!(report.invalid_policies, 10_000);
    assert_eq!(report.problems.len(), REPORTED_PROBLEMS);
    assert_eq!(report.problems_left_out, 10_000 - REPORTED_PROBLEMS);
    assert!(report.problems[0].message.len() <= REPORTED_MESSAGE_BYTES + 3);
    let value = report.encode().unwrap();
    assert_eq!(value.len(), REPORT_BYTES);
    let decoded = Report::decode(&value).unwrap();
    assert_eq!(
        decoded.problems.len() + decoded.problems_left_out,
        10_000,
        "every finding is listed or counted"
    );

    // Names at the limit of what fits: still encodes, fewer listed.
    let name = "n".repeat(2000);
    let problems: Vec<Problem> = (0..REPORTED_PROBLEMS)
        .map(|i| {
            problem(
                Subject::Policy(format!("{name}{i}")),
                Severity::Warning,
                &long,
            )
        })
        .collect();
    let decoded = Report::decode(
        &Report::new(Vec::new(), &problems, 0)
            .encode()
            .expect("fits by leaving findings out"),
    )
    .unwrap();
    assert!(decoded.problems.len() < REPORTED_PROBLEMS);
    assert_eq!(
        decoded.problems.len() + decoded.problems_left_out,
        REPORTED_PROBLEMS
    );

    assert!(matches!(
        Report::decode(&[0xff, 0xff, 0, 0, b'{']),
        Err(ReportError::Truncated)
    ));
}

#[tokio::test]
async fn metrics_of_a_quiet_node_answer_200() {
    let (status, body) = get(metrics(FakeMaps::default()), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("cilium_mcast_egress_drops_total{"), "{body}");
}

/// A scrape reads the maps (blocking syscalls) on a blocking thread of
/// the runtime, not on the async worker serving the request: on this
/// current-thread runtime that worker is the test's own thread.
#[tokio::test]
async fn metrics_read_the_maps_off_the_async_worker() {
    let maps = Arc::new(FakeMaps::default());
    let m = Metrics::with_reader(maps.clone(), crate::source::SourceStats::new()).unwrap();
    let (status, _) = get(m, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let (thread, in_runtime) = lock_read_on(&maps).expect("the scrape read the maps");
    assert_ne!(
        thread,
        std::thread::current().id(),
        "maps read on the async worker"
    );
    assert!(in_runtime, "maps read outside the runtime's blocking pool");
}

fn lock_read_on(maps: &FakeMaps) -> Option<(std::thread::ThreadId, bool)> {
    *maps.read_on.lock().unwrap()
}

#[tokio::test]
async fn metrics_answer_500_when_a_map_read_fails() {
    let failing = FakeMaps {
        fail: true,
        ..FakeMaps::default()
    };
    let (status, body) = get(metrics(failing), "/metrics").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, METRICS_FAILED);
}

#[tokio::test]
async fn metrics_answer_500_when_encoding_fails() {
    let m = metrics(FakeMaps::default());
    add_unencodable_family(&m);
    let (status, body) = get(m, "/metrics").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, METRICS_FAILED);
}
