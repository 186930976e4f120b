//! Business hours per site, in the site's time zone (issue 17): at the
//! boundary minute the site's visitors are told no one is there to answer,
//! over WebSocket and long-poll, whatever the server's own zone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::core_agent::live;
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor};

/// Asia/Shanghai is UTC+8 all year (no daylight saving): a zone that is
/// not the server's (UTC here), with arithmetic the test can do itself.
const SHANGHAI_MS: i64 = 8 * 3600 * 1000;

async fn set_hours(srv: &TestServer, hours: Option<(String, String, String)>) {
    srv.admin(move |db| {
        let h = hours
            .as_ref()
            .map(|(t, w, d)| (t.as_str(), w.as_str(), d.as_str()));
        holdfast_server::admin::set_site_hours(db, "acme", h).unwrap()
    })
    .await;
}

fn agents(m: &VisitorOut) -> Option<bool> {
    match m {
        VisitorOut::Agents { online, .. } => Some(*online),
        _ => None,
    }
}

fn welcome_online(m: &VisitorOut) -> bool {
    matches!(
        m,
        VisitorOut::Welcome {
            agents_online: true,
            ..
        }
    )
}

async fn the_site_closes_at_the_boundary_minute_in_its_own_zone(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = live(&srv, "alice", &dir).await;

    // The next whole minute at least 4 s away, as a Shanghai wall-clock
    // time: the site is open from midnight until then, every day.
    let now = holdfast_server::store::now_ms();
    let mut boundary = (now / 60_000 + 1) * 60_000;
    if boundary - now < 4_000 {
        boundary += 60_000;
    }
    let mut local_min = ((boundary + SHANGHAI_MS) / 60_000) % (24 * 60);
    if local_min == 0 {
        // Midnight there: "00:00-00:00" is no range; take the next minute.
        boundary += 60_000;
        local_min = 1;
    }
    let until = format!("{:02}:{:02}", local_min / 60, local_min % 60);
    set_hours(
        &srv,
        Some((
            "Asia/Shanghai".into(),
            format!("daily 00:00-{until}"),
            String::new(),
        )),
    )
    .await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    assert!(
        welcome_online(&v.welcome),
        "open before {until}: {:?}",
        v.welcome
    );

    // Up to a minute until then: ping as the widget does, or the server
    // rightly drops a visitor that has gone silent.
    let end = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(boundary - now).unwrap() + 5_000);
    let m = loop {
        v.send_json(&VisitorIn::Ping).await.unwrap();
        match v
            .wait_for(Duration::from_secs(1), |m| agents(m).is_some())
            .await
        {
            Ok(m) => break m,
            Err(_) if tokio::time::Instant::now() < end => {}
            Err(e) => panic!("not told the site closed at {until}: {e}"),
        }
    };
    let told = holdfast_server::store::now_ms();
    assert_eq!(agents(&m), Some(false));
    assert!(
        told >= boundary && told <= boundary + 2_500,
        "told {} ms after {until} Shanghai time",
        told - boundary
    );
    // A long-poll visitor arriving now is told at once.
    let (_, resp) = LpVisitor::post(
        srv.http(),
        &holdfast_protocol::visitor::LongPollRequest {
            token: None,
            msgs: vec![holdfast_tests::visitor::hello(
                "acme",
                None,
                None,
                "https://shop.example/closed",
            )],
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(
            resp.msgs.first(),
            Some(VisitorOut::Welcome {
                agents_online: false,
                ..
            })
        ),
        "{:?}",
        resp.msgs
    );

    // Open again when the hours go.
    set_hours(&srv, None).await;
    let m = v
        .wait_for(Duration::from_secs(5), |m| agents(m).is_some())
        .await
        .unwrap();
    assert_eq!(agents(&m), Some(true));

    // Today, there, as a holiday: closed all day, open hours or not.
    let today = holdfast_tests::date_at(holdfast_server::store::now_ms(), SHANGHAI_MS);
    set_hours(
        &srv,
        Some(("Asia/Shanghai".into(), "daily 00:00-24:00".into(), today)),
    )
    .await;
    let m = v
        .wait_for(Duration::from_secs(5), |m| agents(m).is_some())
        .await
        .unwrap();
    assert_eq!(agents(&m), Some(false));
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(the_site_closes_at_the_boundary_minute_in_its_own_zone);
