//! A fuzzer that stays in the suite: seeded random and structure-aware
//! frames of both families (IPv6 with extension-header chains:
//! tests/fuzz/gen6.rs) through both datapath programs under many map
//! states, every result checked against an independent model of the
//! specification (tests/fuzz/model.rs, tests/fuzz/model6.rs) and every
//! redirect against the egress invariant (tests/fuzz/check.rs); then the
//! frames BPF_PROG_RUN cannot take, tagged frames and a sample of the rest
//! over real veths and VXLAN; last, the same kind of frames from a pod of
//! the lab and from a pod behind a plain Linux router, whose kernel is a
//! second oracle (tests/fuzz/kernel.rs).
//!
//! FUZZ_SEED (decimal or 0x-hex) replays a run; FUZZ_FRAMES sets the
//! frames of the BPF_PROG_RUN stage (default 200000), FUZZ_REAL_FRAMES
//! those of the real-path stage (default 3000), FUZZ_KERNEL_FRAMES those of
//! the kernel stage (default 4000). `make fuzz` runs 5000000, 20000 and
//! 200000.
//! Needs root; everything lives in a network namespace and a BPF
//! filesystem of its own.

#[path = "fuzz/check.rs"]
mod check;
mod common;
#[path = "fuzz/decisions.rs"]
mod decisions;
#[path = "fuzz/gen.rs"]
mod gen;
#[path = "fuzz/gen6.rs"]
mod gen6;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/kernel.rs"]
mod kernel;
#[path = "fuzz/model.rs"]
mod model;
#[path = "fuzz/model6.rs"]
mod model6;
#[path = "fuzz/prog_run.rs"]
mod prog_run;
#[path = "fuzz/real_path.rs"]
mod real_path;
#[path = "fuzz/report.rs"]
mod report;
#[path = "fuzz/rng.rs"]
mod rng;
#[path = "fuzz/tap.rs"]
mod tap;

use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

#[test]
fn fuzz_datapath() {
    if !common::privileged("fuzz_datapath") {
        return;
    }
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        rng::mix(t, u64::from(std::process::id()))
    });
    let frames = env_u64("FUZZ_FRAMES").unwrap_or(200_000);
    let real = env_u64("FUZZ_REAL_FRAMES").unwrap_or(3_000) as usize;
    let kernel = env_u64("FUZZ_KERNEL_FRAMES").unwrap_or(4_000) as usize;
    let replay = format!(
        "FUZZ_SEED={seed:#018x} FUZZ_FRAMES={frames} FUZZ_REAL_FRAMES={real} FUZZ_KERNEL_FRAMES={kernel} cargo test --test fuzz -- --nocapture"
    );
    println!("fuzz: seed {seed:#018x} ({frames} + {real} + {kernel} frames)");
    let started = Instant::now();
    let report = common::in_new_netns(move || {
        let fx = harness::Fixture::new();
        println!(
            "fuzz: BPF_PROG_RUN takes frames of 14 to {} bytes",
            fx.max_run_len
        );
        let mut report = report::Report::new(seed, replay);
        let mut queue = prog_run::RealQueue::new(real / 2, seed);
        prog_run::run(&fx, seed, frames, &mut report, &mut queue);
        real_path::run(&fx, seed, real, queue.into_cases(), &mut report);
        report
    });
    // On a thread of its own: the stage pins it to one CPU.
    let report = std::thread::spawn(move || {
        let mut report = report;
        kernel::run(seed, kernel, &mut report);
        report
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    report.print();
    println!("fuzz: {:.1} s in all", started.elapsed().as_secs_f64());
    assert_eq!(
        report.violations, 0,
        "the datapath differs from the model; replay: {}",
        report.replay
    );
    // A run of the default size that never took these paths would pass
    // without having tried them: both families' emissions, tunnel copies,
    // never-egress exemptions and malformed drops.
    if frames >= 100_000 {
        let gaps = report.untaken(&[
            ("mcast_from_container", "emit_redirect"),
            ("mcast_from_container", "tunnel_redirect"),
            ("mcast_from_container", "v6_emit_redirect"),
            ("mcast_from_container", "v6_tunnel_redirect"),
            ("mcast_from_container", "never_egress_scope"),
            ("mcast_from_container", "never_egress_mld_pim"),
            ("mcast_from_overlay (test build)", "emit_redirect"),
            ("mcast_from_overlay (test build)", "v6_emit_redirect"),
        ]);
        assert!(gaps.is_empty(), "paths never taken: {gaps:?}");
        assert!(
            report.drops_seen.contains_key(&model::drop_slot(
                true,
                model::ROLE_ORIGIN,
                model::reason::MALFORMED
            )) && report.drops_seen.contains_key(&model::drop_slot(
                true,
                model::ROLE_GATEWAY,
                model::reason::MALFORMED
            )),
            "no IPv6 frame was dropped as malformed"
        );
    }
    // Nor would a kernel stage in which no valid datagram of either family
    // left both worlds, or none left the kernel's only.
    if kernel >= 2_000 {
        let by = &report.oracle.by;
        for class in ["valid multicast UDP", "IPv6 valid multicast UDP"] {
            let n = by.get(&(class, "class")).copied().unwrap_or_default();
            assert!(
                n[0] > 0,
                "no frame of class '{class}' left both worlds: {n:?}"
            );
        }
        assert!(
            !report.oracle.kernel_only.is_empty(),
            "no frame left the kernel's world only"
        );
    }
}
