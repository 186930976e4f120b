//! Typing both ways in the app (PROTOCOL.md 10.18): "Visitor is typing…"
//! and the visitor's live draft, marked as not sent, under the chat; the
//! agent's own typing in the composer reaches the visitor.

use holdfast_client::protocol::visitor::{VisitorIn, VisitorOut};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visitors_typing_and_draft_show_under_the_chat_and_the_agents_reach_the_visitor() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;

    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked("my order is late").await.unwrap();
    d.until("the chat open", |d| {
        d.has_id("composer") && d.shows("my order is late")
    })
    .await;
    assert!(!d.has_id("typing"), "nobody is typing yet");

    // The visitor types: the app says so, with the draft as not sent.
    v.send_json(&VisitorIn::Typing {
        typing: true,
        draft: Some("it was due on Mon".into()),
    })
    .await
    .unwrap();
    d.until("the visitor typing", |d| {
        d.texts_in("typing") == ["Visitor is typing…", "Not sent yet: “it was due on Mon”"]
    })
    .await;
    // Under the transcript, above the composer.
    let texts = d.texts();
    assert!(
        at(&texts, "my order is late") < at(&texts, "Visitor is typing…"),
        "{texts:?}"
    );

    // Sent: the draft goes, the message is in the transcript.
    v.say_acked("it was due on Monday").await.unwrap();
    d.until("the message in place of the draft", |d| {
        !d.has_id("typing")
            && d.texts_in("transcript")
                .iter()
                .any(|t| t == "it was due on Monday")
    })
    .await;

    // A stop on its own ends it too.
    v.send_json(&VisitorIn::Typing {
        typing: true,
        draft: None,
    })
    .await
    .unwrap();
    d.until("typing without a draft", |d| {
        d.texts_in("typing") == ["Visitor is typing…"]
    })
    .await;
    v.send_json(&VisitorIn::Typing {
        typing: false,
        draft: None,
    })
    .await
    .unwrap();
    d.until("typing gone", |d| !d.has_id("typing")).await;

    // The agent types in the composer: the visitor is told, by name.
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("Let me check");
    });
    let m = v
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, VisitorOut::Typing { .. })
        })
        .await
        .unwrap();
    assert_eq!(
        m,
        VisitorOut::Typing {
            typing: true,
            name: Some("Alice".into())
        }
    );
}
