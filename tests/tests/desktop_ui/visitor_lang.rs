//! A chat whose visitor gave no name is told apart by the visitor's
//! language and current page (issue 17, PROTOCOL.md 10.24): on the queue
//! card, in the chat header and in the Ctrl+K list, with the language
//! named in the app's language, English and Chinese; and the default
//! invitation goes out in the visitor's language, not the agent's.

use holdfast_agent::ui::i18n::{EN, ZH};
use holdfast_agent::ui::screen::workspace::jump;
use holdfast_client::protocol::visitor::VisitorIn;
use holdfast_tests::visitor::hello;

use super::*;

/// A visitor who gives no name, whose widget says `lang`, on `url`.
async fn nameless(srv: &TestServer, lang: &str, url: &str) -> WsVisitor {
    let mut h = hello("acme", None, None, url);
    if let VisitorIn::Hello { lang: l, .. } = &mut h {
        *l = Some(lang.into());
    }
    WsVisitor::connect_with(srv.http(), h).await.unwrap()
}

fn jump_ids(d: &Driver, query: &str) -> Vec<u64> {
    jump::matches(&d.app.workspace.desk, query)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameless_visitor_is_labelled_by_language_and_page_in_english_and_chinese() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("bob").await;
    // Away: chats wait in the queue, where their cards are.
    d.go_away().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut zh = nameless(&srv, "zh-CN", "https://shop.example/pricing?ref=ad").await;
    zh.say_acked("价格是多少？").await.unwrap();
    d.until("the Chinese visitor's card", |d| {
        d.shows("#1 Visitor · Chinese · /pricing")
    })
    .await;
    let zh_conv = d.app.workspace.desk.queue()[0].info.id;
    assert_eq!(
        jump_ids(&d, "chinese"),
        [zh_conv],
        "Ctrl+K finds it by language"
    );
    assert_eq!(jump_ids(&d, "pricing"), [zh_conv]);

    // Taken: the chat header names it the same way.
    d.click_id(&format!("accept-{zh_conv}"));
    d.until("the accepted chat open", |d| {
        d.app.workspace.desk.selected == Some(zh_conv) && d.has_id("composer")
    })
    .await;
    let header = d.texts_in("chat-header");
    assert!(
        header.iter().any(|t| t == "Visitor · Chinese · /pricing"),
        "{header:?}"
    );

    // Taking a chat put Bob back online: away again, so the next waits.
    d.go_away().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An English visitor on the same page waits.
    let mut en = nameless(&srv, "en-GB", "https://shop.example/pricing").await;
    en.say_acked("how much is it?").await.unwrap();
    d.until("the English visitor's card", |d| {
        d.shows("#1 Visitor · English · /pricing")
    })
    .await;
    let en_conv = d.app.workspace.desk.queue()[0].info.id;
    assert_ne!(en_conv, zh_conv);

    // In Chinese, the same chats, the languages named in Chinese.
    d.click_id("lang-zh");
    let texts = d.texts();
    assert!(
        texts.iter().any(|t| t == "#1 访客 · 英语 · /pricing"),
        "{texts:?}"
    );
    let header = d.texts_in("chat-header");
    assert!(
        header.iter().any(|t| t == "访客 · 中文 · /pricing"),
        "{header:?}"
    );
    assert!(!texts.iter().any(|t| t.contains("Visitor ·")), "{texts:?}");
    assert_eq!(jump_ids(&d, "英语"), [en_conv]);
    assert_eq!(jump_ids(&d, "中文"), [zh_conv]);

    // The agent's app is Chinese, but the default invitation goes to an
    // English-speaking visitor in English, and to a Chinese one in Chinese.
    let mut browsing = nameless(&srv, "en-US", "https://shop.example/faq").await;
    let mut browsing_zh = nameless(&srv, "zh-TW", "https://shop.example/faq").await;
    for v in [&browsing.visitor, &browsing_zh.visitor] {
        let id = format!("invite-{v}");
        d.until("the browsing visitor listed", |d| d.has_id(&id))
            .await;
        d.click_id(&id);
    }
    browsing.wait_message(EN.default_invite).await.unwrap();
    browsing_zh.wait_message(ZH.default_invite).await.unwrap();

    d.click_id("lang-en");
    zh.close().await;
    en.close().await;
    srv.stop().await;
}
