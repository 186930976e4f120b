//! Attachments in a cluster (issues 15 and 18): N nodes on one PostgreSQL
//! and one Redis with no sticky sessions, so an upload's requests land on
//! any node. Each test sends them to different nodes on purpose: an
//! upload created on one is continued, checked, finished and downloaded
//! through the others, survives the SIGKILL of the node that took its last
//! chunk, and its caps, its locks and its links hold across nodes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::net::SocketAddr;

use holdfast_protocol::visitor::VisitorOut;
use holdfast_tests::attach::{
    TOKEN, create, created, get, head, json_of, link, offset, patch, pdf, png,
};
use holdfast_tests::cluster::Cluster;
use holdfast_tests::visitor::{WsVisitor, http_exchange};
use serde_json::json;

/// Where the creation floods come from.
const FLOOD_FROM: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 66));

/// A visitor with an open chat (its first message), connected to `http`.
async fn visitor(http: SocketAddr) -> WsVisitor {
    let mut v = WsVisitor::connect(http, "acme").await.unwrap();
    let ack = v.say_acked("here is my file").await.unwrap();
    assert!(matches!(ack, VisitorOut::Ack { .. }), "{ack:?}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_moves_between_nodes_and_survives_a_killed_node() {
    holdfast_tests::init_logs();
    let mut c = Cluster::start_async(3, 5).await;
    let n: Vec<SocketAddr> = c.nodes.iter().map(|p| p.http).collect();
    let v = visitor(n[0]).await;
    let t = v.token.as_str();

    // Created on node 1, the first half through node 2, the offset read
    // back on node 3, the rest through node 3.
    let img = png(900, 700);
    let half = img.len() / 2;
    let id = created(n[0], t, img.len() as u64, "parcel.png").await;
    let r = patch(n[1], t, &id, 0, &img[..half]).await;
    assert_eq!(r.status, 204, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(offset(&r), half as u64);
    let h = head(n[2], t, &id).await;
    assert_eq!(h.status, 200);
    assert_eq!(offset(&h), half as u64);
    assert_eq!(
        h.header("upload-length"),
        Some(img.len().to_string().as_str())
    );
    // A retry of the first half, now stale, is told where the upload is,
    // by a node that did not store it.
    let r = patch(n[2], t, &id, 0, &img[..half]).await;
    assert_eq!(r.status, 409);
    assert_eq!(offset(&r), half as u64);
    let done = patch(n[2], t, &id, half as u64, &img[half..]).await;
    assert_eq!(
        done.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&done.body)
    );
    assert_eq!(json_of(&done)["attachment"]["image"], true);
    assert_eq!(offset(&head(n[0], t, &id).await), img.len() as u64);

    // The link from node 2 works on node 1 (file and thumbnail) and on
    // node 3, byte for byte the same.
    let l = link(n[1], t, &id).await;
    let file = get(n[0], l["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    assert_eq!(file.body, img, "the file as uploaded");
    let thumb = get(n[0], l["thumb_url"].as_str().unwrap(), None).await;
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.header("content-type"), Some("image/png"));
    let t_img = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!(t_img.width(), 320);
    assert!(t_img.height() < 320);
    let thumb3 = get(n[2], l["thumb_url"].as_str().unwrap(), None).await;
    assert_eq!(thumb3.body, thumb.body);

    // A PDF: the node that took its last chunk is killed; another node
    // knows the stored offset and the upload resumes from there.
    let doc = pdf(3_000_000, 7);
    let id = created(n[2], t, doc.len() as u64, "manual.pdf").await;
    assert_eq!(patch(n[0], t, &id, 0, &doc[..400_000]).await.status, 204);
    let r = patch(n[1], t, &id, 400_000, &doc[400_000..900_000]).await;
    assert_eq!(r.status, 204);
    c.nodes[1].kill9();
    let h = head(n[2], t, &id).await;
    assert_eq!(h.status, 200);
    assert_eq!(offset(&h), 900_000, "resumes from the stored offset");
    // The rest with one byte too many, in one PATCH of 2.1 MB: refused,
    // keeping only whole 1 MiB pieces it stored before the overrun, and
    // saying where the upload is; every node agrees.
    let mut over = doc[900_000..].to_vec();
    over.push(b'!');
    let r = patch(n[0], t, &id, 900_000, &over).await;
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    let at = offset(&r);
    assert_eq!((at - 900_000) % (1024 * 1024), 0, "whole pieces only: {at}");
    assert_eq!(offset(&head(n[2], t, &id).await), at);
    let at = usize::try_from(at).unwrap();
    let r = patch(n[0], t, &id, at as u64, &doc[at..]).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let l = link(n[2], t, &id).await;
    let file = get(n[0], l["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    assert!(file.body == doc, "the resumed file is whole");
    assert_eq!(file.header("content-type"), Some("application/pdf"));

    // The killed node comes back and serves it too.
    let c = tokio::task::spawn_blocking(move || {
        c.nodes[1].spawn();
        c
    })
    .await
    .unwrap();
    let file = get(c.nodes[1].http, l["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    assert!(file.body == doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_patches_at_once_on_two_nodes_are_not_both_accepted() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(2, 5).await;
    let n: Vec<SocketAddr> = c.nodes.iter().map(|p| p.http).collect();
    let v = visitor(n[0]).await;
    let chunk = 300_000;
    let rounds = 6;
    let doc = pdf(chunk * rounds, 11);
    let id = created(n[0], &v.token, doc.len() as u64, "race.pdf").await;
    for round in 0..rounds {
        let at = round * chunk;
        let part = doc[at..at + chunk].to_vec();
        let (a, b) = tokio::join!(
            patch(n[0], &v.token, &id, at as u64, &part),
            patch(n[1], &v.token, &id, at as u64, &part)
        );
        let ok = |s: u16| s == 204 || s == 200;
        let accepted = [&a, &b].iter().filter(|r| ok(r.status)).count();
        assert_eq!(
            accepted, 1,
            "round {round}: exactly one of two PATCHes at offset {at} is accepted: {} and {}",
            a.status, b.status
        );
        // The other is told the offset the winner left, as a stale retry
        // on one node is (after the last round: the upload is complete).
        let loser = if ok(a.status) { &b } else { &a };
        assert_eq!(
            loser.status,
            409,
            "{:?}",
            String::from_utf8_lossy(&loser.body)
        );
        assert_eq!(offset(loser), (at + chunk) as u64);
    }
    let l = link(n[1], &v.token, &id).await;
    let file = get(n[0], l["url"].as_str().unwrap(), None).await;
    assert!(file.body == doc, "no chunk stored twice or interleaved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_upload_cap_holds_across_nodes() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(3, 5).await;
    let n: Vec<SocketAddr> = c.nodes.iter().map(|p| p.http).collect();
    let mut bystander = visitor(n[1]).await;
    let v = visitor(n[0]).await;
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let t = v.token.clone();
        let http = n[i % n.len()];
        tasks.push(tokio::spawn(async move {
            let body = json!({"length": 1000, "name": "f.pdf"}).to_string();
            http_exchange(
                // Another address than the bystander's: a flood from one
                // address may use up that address's request rate, which
                // is the point; the bystander is someone else.
                Some(FLOOD_FROM),
                http,
                "POST",
                "/v1/attach",
                &[(TOKEN, &t)],
                Some(body.as_bytes()),
            )
            .await
            .map(|a| a.status)
        }));
    }
    let (mut made, mut limited) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(201) => made += 1,
            Ok(429) => limited += 1,
            Ok(s) => panic!("unexpected status {s}"),
            // A connection refused under the flood is a limit too.
            Err(_) => limited += 1,
        }
    }
    assert_eq!(made, 4, "the per-visitor cap, counted over all nodes");
    assert_eq!(limited, 996);
    let ack = bystander.say_acked("still there?").await.unwrap();
    assert!(matches!(ack, VisitorOut::Ack { .. }), "{ack:?}");
    // The bystander, on another node, can still upload.
    let doc = pdf(5000, 3);
    let id = created(n[2], &bystander.token, doc.len() as u64, "ok.pdf").await;
    assert_eq!(
        patch(n[1], &bystander.token, &id, 0, &doc).await.status,
        200
    );
}

/// The per-address cap (32 unfinished uploads) over nodes: ten visitors
/// from one address ask for four uploads each (their own cap), spread over
/// three nodes that each see no more than 14; exactly 32 are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_cap_holds_across_nodes() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(3, 5).await;
    let n: Vec<SocketAddr> = c.nodes.iter().map(|p| p.http).collect();
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(visitor(n[i % n.len()]).await.token);
    }
    let mut tasks = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        for k in 0..4 {
            let (t, http) = (t.clone(), n[(i + k) % n.len()]);
            tasks.push(tokio::spawn(async move {
                create(http, &t, 1000, "f.pdf").await
            }));
        }
    }
    let mut made = 0;
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            201 => made += 1,
            429 => assert!(
                json_of(&a)["message"]
                    .as_str()
                    .unwrap()
                    .contains("uploads in progress"),
                "refused by the cap, not another limit: {:?}",
                String::from_utf8_lossy(&a.body)
            ),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(made, 32, "the per-address cap, counted over all nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_work_on_every_node_and_forged_ones_on_none() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(3, 5).await;
    let n: Vec<SocketAddr> = c.nodes.iter().map(|p| p.http).collect();
    let v = visitor(n[2]).await;
    let img = png(64, 48);
    let id = created(n[0], &v.token, img.len() as u64, "a.png").await;
    assert_eq!(patch(n[1], &v.token, &id, 0, &img).await.status, 200);
    let l = link(n[0], &v.token, &id).await;
    let url = l["url"].as_str().unwrap();
    let thumb_url = l["thumb_url"].as_str().unwrap();
    let flip = if url.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flip}", &url[..url.len() - 1]);
    let retargeted = url.replacen('?', "/thumb?", 1);
    for (i, http) in n.iter().enumerate() {
        let f = get(*http, url, None).await;
        assert_eq!(f.status, 200, "node {}", i + 1);
        assert_eq!(f.body, img);
        assert_eq!(get(*http, thumb_url, None).await.status, 200);
        assert_eq!(
            get(*http, &forged, None).await.status,
            404,
            "node {}",
            i + 1
        );
        assert_eq!(get(*http, &retargeted, None).await.status, 404);
    }
    // Another visitor, on another node, sees nothing of it.
    let other = visitor(n[1]).await;
    assert_eq!(head(n[0], &other.token, &id).await.status, 404);
    assert_eq!(
        get(n[2], &format!("/v1/attach/{id}/link"), Some(&other.token))
            .await
            .status,
        404
    );
}
