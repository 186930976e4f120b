//! Small helpers shared by the flow tests.

use std::time::Duration;

use holdfast_protocol::agent::{
    AckBatch, Action, ConversationInfo, Event, LiveEvent, Outcome, Presence, ServerMsg,
};

use crate::raw_agent::RawAgent;
use crate::server::{PASSWORD, TestServer};

pub const T: Duration = Duration::from_secs(10);

/// Log in a fresh device and read up to the start of live traffic.
pub async fn agent(srv: &TestServer, name: &str) -> RawAgent {
    let (mut a, ok) = RawAgent::login(srv.agent_addr(), name, PASSWORD)
        .await
        .unwrap();
    assert!(matches!(ok, ServerMsg::LoginOk(_)), "login failed: {ok:?}");
    a.recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    a.recv_until(T, |m| matches!(m, ServerMsg::Live(LiveEvent::Visitors(_))))
        .await
        .unwrap();
    a
}

/// The body of a chat message event a person wrote; `None` for anything
/// else, system lines ("Alice joined the chat") included.
pub fn body(m: &ServerMsg) -> Option<&str> {
    match m {
        ServerMsg::Event {
            event: Event::Message(msg),
            ..
        } if !matches!(msg.author, holdfast_protocol::agent::Author::System) => Some(&msg.body),
        _ => None,
    }
}

pub async fn wait_body(a: &mut RawAgent, text: &str) {
    a.recv_until(T, |m| body(m) == Some(text))
        .await
        .unwrap_or_else(|e| panic!("agent never got {text:?}: {e}"));
}

pub async fn wait_conv(
    a: &mut RawAgent,
    pred: impl Fn(&ConversationInfo) -> bool,
) -> ConversationInfo {
    let m = a
        .recv_until(
            T,
            |m| matches!(m, ServerMsg::Event { event: Event::Conversation(c), .. } if pred(c)),
        )
        .await
        .unwrap();
    match m {
        ServerMsg::Event {
            event: Event::Conversation(c),
            ..
        } => c,
        _ => unreachable!(),
    }
}

/// Run one command and return its result.
pub async fn run(a: &mut RawAgent, action: Action) -> Outcome {
    let (seq, _) = a.command(action).await.unwrap();
    let m = a
        .recv_until(
            T,
            |m| matches!(m, ServerMsg::Ack(b) if b.results.iter().any(|r| r.seq == seq)),
        )
        .await
        .unwrap();
    let ServerMsg::Ack(AckBatch { results, .. }) = m else {
        unreachable!()
    };
    results.into_iter().find(|r| r.seq == seq).unwrap().outcome
}

pub async fn set_presence(a: &mut RawAgent, p: Presence) {
    let o = run(a, Action::SetPresence { presence: p }).await;
    assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
}
