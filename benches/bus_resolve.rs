//! `Identity.Resolve` through a real dbus-daemon with 8 calls in flight, next to
//! `org.freedesktop.DBus.Peer.Ping` sent to the daemon itself, measured in the same run
//! (target: Resolve ≥ 0.9 × Ping). Needs root and the test users (`sudo tests/setup`).
//!
//! `cargo bench --bench bus_resolve` measures; without `--bench` (as `cargo test
//! --all-targets` runs it) it only checks that both calls work.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const IN_FLIGHT: usize = 8;

#[derive(Clone, Copy)]
enum Call {
    Ping,
    /// `Properties.Get` of `Version`: arguments and a reply of about Resolve's size,
    /// answered by zbus without any of our code (a control, not a target).
    GetVersion,
    Resolve,
}

async fn drive(connection: &zbus::Connection, call: Call, length: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + length;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let connection = connection.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let reply = match call {
                        Call::Ping => connection
                            .call_method(
                                Some("org.proxyuserd1"),
                                "/org/proxyuserd1",
                                Some("org.freedesktop.DBus.Peer"),
                                "Ping",
                                &(),
                            )
                            .await
                            .map(drop),
                        Call::GetVersion => connection
                            .call_method(
                                Some("org.proxyuserd1"),
                                "/org/proxyuserd1",
                                Some("org.freedesktop.DBus.Properties"),
                                "Get",
                                &("org.proxyuserd1.Admin", "Version"),
                            )
                            .await
                            .map(drop),
                        Call::Resolve => connection
                            .call_method(
                                Some("org.proxyuserd1"),
                                "/org/proxyuserd1",
                                Some("org.proxyuserd1.Identity"),
                                "Resolve",
                                &(ALICE,),
                            )
                            .await
                            .map(|m| {
                                let (effective, ..): (String, String, u32, u32) =
                                    m.body().deserialize().unwrap();
                                assert_eq!(effective, ETL);
                            }),
                    };
                    reply.expect("call failed");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (rounds, length) = if measuring {
        (5, Duration::from_secs(3))
    } else {
        (1, Duration::from_millis(200))
    };
    let env = Env::start("bench-resolve");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connection = zbus::connection::Builder::address(env.address.as_str())
            .build()
            .await
            .unwrap();
        // Warm up both paths (caller cache, NSS cache).
        drive(&connection, Call::Resolve, Duration::from_millis(200)).await;
        drive(&connection, Call::Ping, Duration::from_millis(200)).await;
        let (mut pings, mut gets, mut resolves) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            pings.push(drive(&connection, Call::Ping, length).await);
            gets.push(drive(&connection, Call::GetVersion, length).await);
            resolves.push(drive(&connection, Call::Resolve, length).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (ping, get, resolve) = (median(&mut pings), median(&mut gets), median(&mut resolves));
        println!(
            "bus_resolve: {IN_FLIGHT} calls in flight, {rounds} rounds of {length:?}, medians:"
        );
        println!("  Peer.Ping        {ping:>9.0} calls/s");
        println!("  Properties.Get   {get:>9.0} calls/s   (control: args and reply, no work)");
        println!("  Identity.Resolve {resolve:>9.0} calls/s");
        println!("  Resolve / Ping   {:>9.2}", resolve / ping);
    });
}
