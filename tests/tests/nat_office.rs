//! An office of agents behind one public address (one NAT), after a server
//! restart: every agent's ticket has expired (their connections stayed up
//! longer than its lifetime), so all of them log in with their passwords at
//! the same moment, from the same address. Nothing failed, so nothing may
//! be throttled; a real attacker at one address is still throttled
//! (`attacks_agent.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_client::Update;
use holdfast_protocol::agent::{Role, ServerMsg};
use holdfast_protocol::error::ErrorCode;
use holdfast_tests::core_agent::{CoreAgent, fast_config};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::new_id;

const OFFICE: usize = 50;

/// The office's accounts, `office0`…`office49`, password [`PASSWORD`].
fn seed_office(srv: &TestServer) {
    let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
    for i in 0..OFFICE {
        holdfast_server::admin::add_agent(
            &conn,
            "acme",
            &format!("office{i}"),
            &format!("Office {i}"),
            PASSWORD,
            2,
            Role::Agent,
        )
        .unwrap();
    }
}

/// The server's side, exactly at once: every connection's handshake first,
/// then all 50 password logins back to back from 127.0.0.1 (client cores
/// arrive spread out by their own handshakes; a restart does not promise
/// that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_right_passwords_at_once_from_one_address_are_all_let_in() {
    let srv = TestServer::start_with(|cfg| {
        cfg.preauth = holdfast_server::login::PreAuthConfig {
            // 50 unfinished logins from one address at once; the default
            // (32) is a separate limit, met by the client cores below.
            max_per_ip: OFFICE,
            ..holdfast_server::login::PreAuthConfig::default()
        };
    })
    .await;
    seed_office(&srv);
    let mut conns = Vec::new();
    for _ in 0..OFFICE {
        conns.push(RawAgent::handshake(srv.agent_addr()).await.unwrap());
    }
    let go = std::sync::Arc::new(tokio::sync::Barrier::new(conns.len()));
    let logins: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut a)| {
            let go = go.clone();
            tokio::spawn(async move {
                go.wait().await;
                a.send(&RawAgent::login_msg(
                    &format!("office{i}"),
                    PASSWORD,
                    new_id(),
                    None,
                ))
                .await
                .unwrap();
                // A generous liveness bound, not a speed assertion.
                a.recv(Duration::from_secs(60)).await.unwrap()
            })
        })
        .collect();
    let (mut ok, mut throttled, mut other) = (0, 0, Vec::new());
    for l in logins {
        match l.await.unwrap() {
            Some(ServerMsg::LoginOk(_)) => ok += 1,
            Some(ServerMsg::Error(e)) if e.code == ErrorCode::Throttled => throttled += 1,
            m => other.push(format!("{m:?}")),
        }
    }
    let server_throttled = srv.running().ctx.metrics.logins_throttled.get();
    println!(
        "{OFFICE} right passwords at once from one address: {ok} let in, \
         {throttled} throttled ({server_throttled} by the server's count), other: {other:?}"
    );
    assert_eq!(throttled, 0, "right passwords were throttled");
    assert_eq!(server_throttled, 0);
    assert_eq!(ok, OFFICE, "{other:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_behind_one_address_all_logging_in_at_once_is_not_throttled() {
    let srv = TestServer::start_with(|cfg| {
        // The default per-address limits, not the test harness's loosened
        // ones: an office at one address is exactly what they are about.
        cfg.preauth = holdfast_server::login::PreAuthConfig::default();
    })
    .await;
    seed_office(&srv);
    let dir = tempfile::tempdir().unwrap();
    let server = srv.agent_addr().to_string();
    // Every core starts at once, with no ticket: a password login each,
    // all from 127.0.0.1.
    let agents: Vec<CoreAgent> = (0..OFFICE)
        .map(|i| {
            let user = format!("office{i}");
            CoreAgent::start(fast_config(
                &server,
                &user,
                &dir.path().join(format!("{user}.sqlite3")),
                srv.running().fingerprint,
            ))
        })
        .collect();
    let live: Vec<_> = agents
        .into_iter()
        .map(|mut a| {
            tokio::spawn(async move {
                // A generous liveness bound, not a speed assertion: fifty
                // password hashes at once on a loaded two-core machine took
                // longer than the harness's usual 15 s wait, whose panic
                // then hid the throttling count this test is about.
                let r = tokio::time::timeout(
                    Duration::from_secs(60),
                    a.live_within(Duration::from_secs(90)),
                )
                .await;
                let throttled = a
                    .seen
                    .iter()
                    .filter(|u| {
                        matches!(
                            u,
                            Update::LoginFailed {
                                code: ErrorCode::Throttled,
                                ..
                            }
                        )
                    })
                    .count();
                (r.is_ok(), throttled, a)
            })
        })
        .collect();
    let mut signed_in = 0;
    let mut refusals = 0;
    let mut cores = Vec::new();
    for l in live {
        let (ok, throttled, a) = l.await.unwrap();
        signed_in += usize::from(ok);
        refusals += throttled;
        cores.push(a);
    }
    let server_throttled = srv.running().ctx.metrics.logins_throttled.get();
    let failures = srv.running().ctx.metrics.login_failures.get();
    println!(
        "{signed_in}/{OFFICE} signed in; {refusals} throttled refusals seen by the clients, \
         {server_throttled} counted by the server, {failures} failed logins"
    );
    assert_eq!(signed_in, OFFICE, "not every agent of the office got in");
    assert_eq!(refusals, 0, "right passwords were throttled");
    assert_eq!(server_throttled, 0, "the server throttled right passwords");
    assert_eq!(failures, 0);
    for a in cores {
        a.shutdown().await;
    }
    srv.stop().await;
}

/// A connection that stays up longer than its ticket's life is sent fresh
/// tickets over the link, so after a server restart its device resumes
/// with a ticket (no password hash), not with a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_older_than_its_ticket_still_resumes_with_a_ticket() {
    let lifetime = Duration::from_secs(2);
    let mut srv = TestServer::start_with(|cfg| cfg.ticket_lifetime = lifetime).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = CoreAgent::start(fast_config(
        &srv.agent_addr().to_string(),
        "alice",
        &dir.path().join("alice.sqlite3"),
        srv.running().fingerprint,
    ));
    alice.live().await;
    // Up for well over the ticket's life: the one from LoginOk has expired.
    tokio::time::sleep(lifetime * 2).await;
    srv.restart().await;
    alice.not_live().await;
    alice.live().await;
    let m = &srv.running().ctx.metrics;
    let (by_ticket, hashes) = (m.logins_by_ticket.get(), m.password_checks.get());
    println!("after the restart: {by_ticket} ticket logins, {hashes} password checks");
    assert_eq!(by_ticket, 1, "the device did not resume with a ticket");
    assert_eq!(hashes, 0, "the device needed its password");
    alice.shutdown().await;
    srv.stop().await;
}
