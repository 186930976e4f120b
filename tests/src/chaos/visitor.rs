//! Visitors: in-process tasks that behave like the widget.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::Seq;
use holdfast_protocol::backoff::{Backoff, BackoffConfig};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{Sender, VisitorEvent, VisitorIn, VisitorOut};
use rand::RngExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::Timings;
use super::book::{SharedBook, lock};
use crate::proxy::Proxy;
use crate::visitor::{hello, new_id};
/// A widget-like visitor: a durable outbox, a cursor, its own heartbeat.
pub(crate) struct VisitorTask {
    pub(crate) idx: usize,
    pub(crate) proxy: Proxy,
    pub(crate) timings: Timings,
    pub(crate) book: SharedBook,
    pub(crate) cmds: mpsc::UnboundedReceiver<String>,
    pub(crate) stop: CancellationToken,
    /// Kill the current connection (a page reload).
    pub(crate) reload: Arc<tokio::sync::Notify>,
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl VisitorTask {
    pub(crate) fn name(&self) -> String {
        format!("v{}", self.idx)
    }

    pub(crate) async fn run(mut self, welcome: tokio::sync::oneshot::Sender<String>) {
        let mut welcome = Some(welcome);
        let mut token: Option<String> = None;
        let mut cursor: Seq = 0;
        let mut outbox: VecDeque<(MsgId, String)> = VecDeque::new();
        let mut backoff = Backoff::new(
            BackoffConfig {
                base: self.timings.backoff_base,
                cap: self.timings.backoff_cap,
            },
            rand::rng().random(),
        );
        let mut first = true;
        while !self.stop.is_cancelled() {
            if !first {
                let d = backoff.next_delay();
                tokio::select! {
                    () = self.stop.cancelled() => break,
                    () = tokio::time::sleep(d) => {}
                }
            }
            first = false;
            let Some((mut ws, visitor_id, new_token)) = self.connect(token.clone(), cursor).await
            else {
                continue;
            };
            token = Some(new_token);
            if let Some(w) = welcome.take() {
                let _ = w.send(visitor_id);
            } else {
                lock(&self.book).visitor_reconnects += 1;
            }
            {
                let mut b = lock(&self.book);
                b.visitor_live.insert(self.idx, true);
                *b.connections.entry(self.name()).or_insert(0) += 1;
            }
            backoff.reset();
            self.session(&mut ws, &mut cursor, &mut outbox).await;
            {
                let mut b = lock(&self.book);
                b.visitor_live.insert(self.idx, false);
                b.went_down.insert(self.name(), Instant::now());
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
        }
    }

    /// Open a WebSocket through the proxy and say hello; None on any failure.
    pub(crate) async fn connect(
        &self,
        token: Option<String>,
        cursor: Seq,
    ) -> Option<(Ws, String, String)> {
        let limit = self.timings.dead_after;
        let url = format!("ws://{}/v1/visitor/ws", self.proxy.addr);
        let (mut ws, _) = tokio::time::timeout(limit, tokio_tungstenite::connect_async(url))
            .await
            .ok()?
            .ok()?;
        let after = token.as_ref().map(|_| cursor);
        let h = hello("acme", token.clone(), after, "https://shop.example/chaos");
        let text = serde_json::to_string(&h).ok()?;
        tokio::time::timeout(limit, ws.send(Message::Text(text.into())))
            .await
            .ok()?
            .ok()?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = tokio::time::timeout_at(deadline, ws.next())
                .await
                .ok()??
                .ok()?;
            let Message::Text(t) = m else { continue };
            let out: VisitorOut = serde_json::from_str(&t).ok()?;
            match out {
                VisitorOut::Welcome {
                    visitor,
                    token: tok,
                    resumed,
                    ..
                } => {
                    if token.is_some() && !resumed {
                        lock(&self.book).snapshots += 1;
                    }
                    return Some((ws, visitor, tok));
                }
                VisitorOut::Error { code, message, .. } => {
                    lock(&self.book)
                        .visitor_errors
                        .push(format!("{}: hello refused: {code} {message}", self.name()));
                    return None;
                }
                _ => continue,
            }
        }
    }

    pub(crate) async fn send(ws: &mut Ws, m: &VisitorIn) -> bool {
        let Ok(text) = serde_json::to_string(m) else {
            return false;
        };
        ws.send(Message::Text(text.into())).await.is_ok()
    }

    /// One connection: resend the outbox, then pump until the link fails.
    pub(crate) async fn session(
        &mut self,
        ws: &mut Ws,
        cursor: &mut Seq,
        outbox: &mut VecDeque<(MsgId, String)>,
    ) {
        let me = self.name();
        for (id, body) in outbox.iter() {
            let m = VisitorIn::Send {
                id: *id,
                body: body.clone(),
                attachment: None,
            };
            if !Self::send(ws, &m).await {
                return;
            }
        }
        let mut last_rx = Instant::now();
        let mut last_tx = Instant::now();
        let tick = self.timings.heartbeat / 4;
        let reload = self.reload.clone();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = reload.notified() => return,
                cmd = self.cmds.recv() => {
                    let Some(body) = cmd else { return };
                    let id = new_id();
                    outbox.push_back((id, body.clone()));
                    if !Self::send(ws, &VisitorIn::Send { id, body, attachment: None }).await {
                        return;
                    }
                    last_tx = Instant::now();
                }
                m = ws.next() => {
                    let text = match m {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => continue,
                    };
                    last_rx = Instant::now();
                    let Ok(out) = serde_json::from_str::<VisitorOut>(&text) else {
                        lock(&self.book).visitor_errors.push(format!("{me}: bad json from server"));
                        return;
                    };
                    match out {
                        VisitorOut::Event { seq, event } => {
                            if seq <= *cursor {
                                continue;
                            }
                            if seq > *cursor + 1 {
                                // A gap: resume from the cursor on a new connection.
                                return;
                            }
                            *cursor = seq;
                            if let VisitorEvent::Message(m) = &event
                                && m.from == Sender::Agent
                                && !m.body.starts_with("invite:")
                            {
                                let mut b = lock(&self.book);
                                b.checker.received(&me, &m.body);
                                b.applied(&me, &m.body, m.message);
                            }
                            if !Self::send(ws, &VisitorIn::Ack { seq }).await {
                                return;
                            }
                            last_tx = Instant::now();
                        }
                        VisitorOut::Ack { id, .. } => {
                            if let Some(pos) = outbox.iter().position(|(i, _)| *i == id) {
                                let (_, body) = outbox.remove(pos).unwrap_or_default();
                                let mut b = lock(&self.book);
                                b.acked(&body);
                                b.server_acks.push(Instant::now());
                            }
                        }
                        VisitorOut::Error { code, message, id, .. } => {
                            lock(&self.book).visitor_errors.push(format!("{me}: {code} {message}"));
                            if id.is_some() {
                                // Not stored: reconnect, which resends it.
                                return;
                            }
                        }
                        VisitorOut::Snapshot { seq, .. } => {
                            lock(&self.book).snapshots += 1;
                            *cursor = seq;
                        }
                        VisitorOut::GoingAway { .. } => return,
                        _ => {}
                    }
                }
                () = tokio::time::sleep(tick) => {}
            }
            if last_rx.elapsed() >= self.timings.dead_after {
                lock(&self.book).link_dead(&me, false);
                return;
            }
            if last_tx.elapsed() >= self.timings.heartbeat {
                if !Self::send(ws, &VisitorIn::Ping).await {
                    return;
                }
                last_tx = Instant::now();
            }
        }
    }
}

/// The harness side of a visitor.
pub(crate) struct VisitorLink {
    pub(crate) proxy: Proxy,
    pub(crate) tx: mpsc::UnboundedSender<String>,
    pub(crate) reload: Arc<tokio::sync::Notify>,
    pub(crate) next: usize,
}
