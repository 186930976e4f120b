//! Groups (departments, PROTOCOL.md 10.23) in the app: a waiting chat of a
//! group the agent is not in is not offered (no card, no alert, not taken
//! by Ctrl+Enter), a chat shows its group, and a chat moves to a group
//! from the transfer panel, where the group's own member gets it.

use holdfast_client::protocol::agent::Role;
use holdfast_tests::visitor::hello_in_group;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_shows_its_group_is_offered_to_members_and_moves_to_a_group() {
    let srv = TestServer::start().await;
    srv.admin(|db| {
        use holdfast_server::groups;
        groups::add(db, "acme", "billing", "Billing & refunds").unwrap();
        groups::add(db, "acme", "sales", "Sales").unwrap();
        groups::members(db, "acme", "billing", &["bob".into()], &[]).unwrap();
        groups::members(db, "acme", "sales", &["alice".into()], &[]).unwrap();
    })
    .await;
    let bob_id = agent_id(&srv, "bob");
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;
    d.until("the groups list", |d| {
        d.app.workspace.desk.groups.len() == 2
    })
    .await;
    assert_eq!(d.app.workspace.desk.my_role(), Role::Agent);

    // A billing visitor while Bob, billing's one member, is away: the chat
    // waits in billing's queue, which is not Alice's to take.
    let mut billing = WsVisitor::connect_with(
        srv.http(),
        hello_in_group("acme", "billing", "https://shop.example/invoice"),
    )
    .await
    .unwrap();
    billing.say_acked("my invoice is wrong").await.unwrap();
    d.until("the billing chat known", |d| {
        d.app
            .workspace
            .desk
            .convs
            .values()
            .any(|c| c.info.group.as_deref() == Some("billing"))
    })
    .await;
    let billing_conv = d
        .app
        .workspace
        .desk
        .convs
        .values()
        .find(|c| c.info.group.as_deref() == Some("billing"))
        .map(|c| c.info.id)
        .unwrap();
    assert!(d.shows("Waiting (0)"), "{:?}", d.texts());
    assert!(!d.has_id(&format!("accept-{billing_conv}")));
    // Ctrl+Enter takes the oldest chat of this list: none for Alice.
    assert!(d.app.workspace.desk.queue().is_empty());
    // Opened from the visitor list, it says whose it is to take.
    let billing_visitor = billing.visitor.clone();
    d.until("the billing visitor listed", |d| {
        d.has_id(&format!("open-{billing_visitor}"))
    })
    .await;
    d.click_id(&format!("open-{billing_visitor}"));
    d.until("the billing chat open read-only", |d| {
        d.shows(
            "This chat waits for Billing & refunds: one of its agents or a supervisor takes it.",
        )
    })
    .await;
    assert!(d.shows("for Billing & refunds"), "{:?}", d.texts());

    // A sales visitor is Alice's, and its header names the group.
    let mut sales = WsVisitor::connect_with(
        srv.http(),
        hello_in_group("acme", "sales", "https://shop.example/pricing"),
    )
    .await
    .unwrap();
    sales.say_acked("do you have a team plan?").await.unwrap();
    d.until("the sales chat Alice's", |d| {
        d.app.workspace.desk.mine().len() == 1
    })
    .await;
    let sales_conv = d.app.workspace.desk.mine()[0].info.id;
    d.click_id(&format!("conv-{sales_conv}"));
    d.until("the sales chat open", |d| {
        d.has_id("composer") && d.shows("do you have a team plan?")
    })
    .await;
    assert!(d.shows("for Sales"), "{:?}", d.texts());

    // Move it to billing: the panel offers the groups by name; Bob, once
    // back, gets it from billing's queue along with the first one.
    d.click_id("transfer");
    d.until("the transfer panel", |d| d.has_id("transfer-panel"))
        .await;
    assert!(d.shows("Billing & refunds"), "{:?}", d.texts());
    d.click_id("transfer-to-group-billing");
    d.click_id("transfer-send");
    d.until("the chat gone from Alice", |d| {
        d.shows("My conversations (0)")
    })
    .await;
    let left = &d.app.workspace.desk.convs[&sales_conv].info;
    assert_eq!(left.group.as_deref(), Some("billing"));
    assert_eq!(left.assigned, None);
    assert!(
        !d.has_id(&format!("accept-{sales_conv}")),
        "a chat moved to billing is not offered to Alice"
    );
    let mut bob = core(&srv, "bob", dir.path());
    bob.live().await;
    for conv in [billing_conv, sales_conv] {
        bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
            .await;
    }
    d.until("both chats with Bob", |d| {
        [billing_conv, sales_conv]
            .iter()
            .all(|id| d.app.workspace.desk.convs[id].info.assigned == Some(bob_id))
    })
    .await;

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    bob.shutdown().await;
    srv.stop().await;
}
