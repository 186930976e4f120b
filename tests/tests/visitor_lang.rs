//! A visitor's language (issue 17, PROTOCOL.md 10.24) end to end, with a
//! real agent client core and WebSocket and long-poll visitors, on both
//! stores: the widget's `hello.lang` reaches the agent put in shape; with
//! none, the first tag of the request's `Accept-Language` does; a value
//! that is no language tag is dropped (the visitor is still welcome), one
//! over the limit refuses the hello; and a later hello without a language
//! keeps the stored one, which history answers with too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use holdfast_client::Update;
use holdfast_protocol::agent::{QueryResult, VisitorInfo};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello};

/// A hello from the shop's pricing page saying `lang` (or none).
fn hello_lang(lang: Option<&str>, token: Option<String>) -> VisitorIn {
    let mut h = hello("acme", token, None, "https://shop.example/pricing");
    if let VisitorIn::Hello { lang: l, .. } = &mut h {
        *l = lang.map(str::to_owned);
    }
    h
}

async fn ws(srv: &TestServer, lang: Option<&str>, accept: Option<&str>) -> WsVisitor {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept-Language", a)).into_iter().collect();
    WsVisitor::connect_with_headers(srv.http(), hello_lang(lang, None), &headers)
        .await
        .unwrap()
}

/// A long-poll visitor, polling in the background so that it is online.
async fn lp(srv: &TestServer, lang: Option<&str>, accept: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept-Language", a)).into_iter().collect();
    let (mut v, welcome) =
        LpVisitor::connect_with_headers(srv.http(), hello_lang(lang, None), &headers)
            .await
            .unwrap();
    assert!(matches!(welcome, VisitorOut::Welcome { .. }), "{welcome:?}");
    let id = v.visitor.clone();
    tokio::spawn(async move {
        for _ in 0..20 {
            if v.poll().await.is_err() {
                break;
            }
        }
    });
    id
}

/// The visitor as the agent's live list shows it.
async fn seen(a: &mut CoreAgent, visitor: &str) -> VisitorInfo {
    a.visitor_where(|v| v.id == visitor && v.online).await
}

/// The visitor as the server's history answer has it: what the store kept.
async fn stored(a: &mut CoreAgent, visitor: &str) -> VisitorInfo {
    let request = a.handle.load_history(visitor.to_owned(), None, 10).unwrap();
    let result = a
        .until("history", |u| match u {
            Update::History { request: r, result } if *r == request => Some(result.clone()),
            _ => None,
        })
        .await;
    match result {
        QueryResult::History {
            visitor: Some(v), ..
        } => *v,
        other => panic!("no visitor in history: {other:?}"),
    }
}

async fn visitor_language_reaches_agents(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;

    // WebSocket. The hello's language wins over the header, in its usual case.
    let zh = ws(&srv, Some("zh_cn"), Some("fr-FR,fr;q=0.9")).await;
    assert_eq!(
        seen(&mut alice, &zh.visitor).await.lang.as_deref(),
        Some("zh-CN")
    );
    // None in the hello: the upgrade request's first Accept-Language tag.
    let pt = ws(&srv, None, Some("pt-BR,pt;q=0.9,en;q=0.8")).await;
    assert_eq!(
        seen(&mut alice, &pt.visitor).await.lang.as_deref(),
        Some("pt-BR")
    );
    // Markup in the hello is dropped, not shown, and costs no chat: the
    // header stands in, and with no header there is no language.
    let mut hostile = ws(&srv, Some("<img src=x>"), None).await;
    assert!(matches!(hostile.welcome, VisitorOut::Welcome { .. }));
    assert_eq!(seen(&mut alice, &hostile.visitor).await.lang, None);
    hostile.say_acked("still served").await.unwrap();
    let fallback = ws(&srv, Some("english please"), Some("de-DE")).await;
    assert_eq!(
        seen(&mut alice, &fallback.visitor).await.lang.as_deref(),
        Some("de-DE")
    );
    // Over the limit: the hello is refused, naming the field.
    let long = format!("en-{}", "a".repeat(40));
    let e = WsVisitor::connect_with(srv.http(), hello_lang(Some(&long), None))
        .await
        .unwrap_err()
        .to_string();
    let code = format!("{:?}", ErrorCode::BadRequest);
    assert!(e.contains("lang") && e.contains(&code), "{e}");

    // Long-poll: the same rules, the header of the POST that says hello.
    let ja = lp(&srv, None, Some("ja")).await;
    assert_eq!(seen(&mut alice, &ja).await.lang.as_deref(), Some("ja"));
    let gb = lp(&srv, Some("en-gb"), Some("ja")).await;
    assert_eq!(seen(&mut alice, &gb).await.lang.as_deref(), Some("en-GB"));
    let junk = lp(&srv, None, Some("\u{202e}<b>x</b>, en")).await;
    assert_eq!(seen(&mut alice, &junk).await.lang, None);

    // Stored: history answers with it, and a later hello that says no
    // language (a reload with another browser setting off) keeps it.
    assert_eq!(
        stored(&mut alice, &zh.visitor).await.lang.as_deref(),
        Some("zh-CN")
    );
    assert_eq!(stored(&mut alice, &ja).await.lang.as_deref(), Some("ja"));
    assert_eq!(stored(&mut alice, &hostile.visitor).await.lang, None);
    let token = zh.token.clone();
    let zh_id = zh.visitor.clone();
    zh.close().await;
    let again = WsVisitor::connect_with(srv.http(), hello_lang(None, Some(token)))
        .await
        .unwrap();
    assert_eq!(again.visitor, zh_id);
    assert_eq!(
        stored(&mut alice, &zh_id).await.lang.as_deref(),
        Some("zh-CN")
    );
    assert_eq!(
        seen(&mut alice, &zh_id).await.lang.as_deref(),
        Some("zh-CN")
    );

    again.close().await;
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(visitor_language_reaches_agents);
