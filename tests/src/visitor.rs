//! Scripted visitors: one over WebSocket, one over HTTP long-poll. Both keep
//! a cursor and record every event they applied, so tests can count.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::Seq;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{
    LongPollRequest, LongPollResponse, PageInfo, Sender, VisitorEvent, VisitorIn, VisitorOut,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub fn new_id() -> MsgId {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    MsgId::generate(ms, &mut rand::rng())
}

pub fn hello(site: &str, token: Option<String>, after: Option<Seq>, url: &str) -> VisitorIn {
    VisitorIn::Hello {
        site: site.into(),
        token,
        after,
        page: Some(PageInfo {
            url: url.into(),
            title: format!("Page {url}"),
            referrer: Some("https://search.example/?q=holdfast".into()),
        }),
        user_agent: Some("HoldfastTest/1.0 (X11; Linux x86_64)".into()),
        lang: Some("en".into()),
        v: None,
        identity: None,
        group: None,
    }
}

/// A hello from a page whose widget targets the site group `group`
/// (`data-group`, or the visitor's choice; PROTOCOL.md 10.23).
pub fn hello_in_group(site: &str, group: &str, url: &str) -> VisitorIn {
    let mut h = hello(site, None, None, url);
    if let VisitorIn::Hello { group: g, .. } = &mut h {
        *g = Some(group.into());
    }
    h
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A visitor tab over WebSocket.
#[derive(Debug)]
pub struct WsVisitor {
    ws: Ws,
    pub visitor: String,
    pub token: String,
    pub cursor: Seq,
    /// Every event applied, in order.
    pub events: Vec<(Seq, VisitorEvent)>,
    /// Everything else received (acks, errors, pongs, snapshots).
    pub other: Vec<VisitorOut>,
    pub welcome: VisitorOut,
}

impl WsVisitor {
    pub async fn connect(http: SocketAddr, site: &str) -> anyhow::Result<Self> {
        Self::connect_with(http, hello(site, None, None, "https://shop.example/")).await
    }

    /// Connect with an explicit hello.
    pub async fn connect_with(http: SocketAddr, hello: VisitorIn) -> anyhow::Result<Self> {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{http}/v1/visitor/ws")).await?;
        Self::start(ws, hello).await
    }

    /// Connect with an explicit hello and extra header lines on the
    /// upgrade request (`Accept-Language`, as a browser sends it).
    pub async fn connect_with_headers(
        http: SocketAddr,
        hello: VisitorIn,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut req = format!("ws://{http}/v1/visitor/ws").into_client_request()?;
        for (k, v) in headers {
            req.headers_mut()
                .insert(HeaderName::try_from(*k)?, HeaderValue::try_from(*v)?);
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Self::start(ws, hello).await
    }

    /// Connect from another local address (127.x.y.z), so per-address
    /// limits see a different client.
    pub async fn connect_from(
        http: SocketAddr,
        from: std::net::IpAddr,
        hello: VisitorIn,
    ) -> anyhow::Result<Self> {
        let tcp = crate::attack::tcp_from(from, http).await?;
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{http}/v1/visitor/ws"),
            tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        )
        .await?;
        Self::start(ws, hello).await
    }

    async fn start(mut ws: Ws, hello: VisitorIn) -> anyhow::Result<Self> {
        let after = match &hello {
            VisitorIn::Hello { after, .. } => after.unwrap_or(0),
            _ => 0,
        };
        ws.send(Message::Text(serde_json::to_string(&hello)?.into()))
            .await?;
        let first = next_json(&mut ws, Duration::from_secs(5)).await?;
        let VisitorOut::Welcome { visitor, token, .. } = &first else {
            anyhow::bail!("expected welcome, got {first:?}");
        };
        Ok(Self {
            visitor: visitor.clone(),
            token: token.clone(),
            ws,
            cursor: after,
            events: Vec::new(),
            other: Vec::new(),
            welcome: first,
        })
    }

    /// Resume as the same visitor from our cursor (a page reload).
    pub async fn reconnect(self, http: SocketAddr, site: &str) -> anyhow::Result<Self> {
        let (token, cursor, events) = (self.token.clone(), self.cursor, self.events);
        drop(self.ws);
        let mut v = Self::connect_with(
            http,
            hello(
                site,
                Some(token),
                Some(cursor),
                "https://shop.example/again",
            ),
        )
        .await?;
        v.events = events;
        Ok(v)
    }

    pub async fn send_json(&mut self, msg: &VisitorIn) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text(serde_json::to_string(msg)?.into()))
            .await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.to_string().into())).await?;
        Ok(())
    }

    /// Send a chat message; returns its id (the ack arrives later).
    pub async fn say(&mut self, body: &str) -> anyhow::Result<MsgId> {
        let id = new_id();
        self.send_json(&VisitorIn::Send {
            id,
            body: body.into(),
            attachment: None,
        })
        .await?;
        Ok(id)
    }

    /// Send and wait for the ack (or error) for it.
    pub async fn say_acked(&mut self, body: &str) -> anyhow::Result<VisitorOut> {
        let id = self.say(body).await?;
        self.wait_for(Duration::from_secs(10), |m| match m {
            VisitorOut::Ack { id: a, .. } => *a == id,
            VisitorOut::Error { id: Some(a), .. } => *a == id,
            _ => false,
        })
        .await
    }

    /// Read until a message matches `pred`; events are applied on the way
    /// (duplicates by seq are dropped, as the widget does) and acked.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&VisitorOut) -> bool,
    ) -> anyhow::Result<VisitorOut> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            anyhow::ensure!(!left.is_zero(), "timed out waiting");
            let m = next_json(&mut self.ws, left).await?;
            self.apply(&m).await?;
            if pred(&m) {
                return Ok(m);
            }
        }
    }

    async fn apply(&mut self, m: &VisitorOut) -> anyhow::Result<()> {
        match m {
            VisitorOut::Event { seq, event } => {
                if *seq == self.cursor + 1 {
                    self.cursor = *seq;
                    self.events.push((*seq, event.clone()));
                    // Acks are advisory (the cursor is what resumes), and the
                    // socket may already be closing: keep reading regardless.
                    let _ = self.send_json(&VisitorIn::Ack { seq: *seq }).await;
                } else if *seq > self.cursor + 1 {
                    anyhow::bail!("gap: cursor {} got {}", self.cursor, seq);
                }
            }
            VisitorOut::Snapshot { seq, .. } => {
                self.cursor = *seq;
                self.other.push(m.clone());
            }
            other => self.other.push(other.clone()),
        }
        Ok(())
    }

    /// Wait for a chat message event whose body matches.
    pub async fn wait_message(&mut self, body: &str) -> anyhow::Result<()> {
        self.wait_for(Duration::from_secs(10), |m| {
            matches!(m, VisitorOut::Event { event: VisitorEvent::Message(msg), .. } if msg.body == body)
        })
        .await
        .map(|_| ())
    }

    /// Bodies of every chat message applied so far, in order: what people
    /// wrote, without system lines ("Alice joined the chat").
    pub fn bodies(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                VisitorEvent::Message(m) if m.from != Sender::System => Some(m.body.clone()),
                _ => None,
            })
            .collect()
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

async fn next_json(ws: &mut Ws, limit: Duration) -> anyhow::Result<VisitorOut> {
    loop {
        let m = tokio::time::timeout(limit, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for a websocket message"))?;
        match m {
            None => anyhow::bail!("websocket closed"),
            Some(Err(e)) => anyhow::bail!("websocket error: {e}"),
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(Message::Close(_))) => anyhow::bail!("websocket closed by server"),
            Some(Ok(_)) => continue,
        }
    }
}

/// One HTTP request to a test server: (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let r = http_exchange(None, addr, method, path, &[], body).await?;
    Ok((r.status, r.body))
}

/// An HTTP answer with its head, for tests that look at headers.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One well-formed request from `from` (another loopback address) when
/// given, with extra header lines, on a connection of its own (no pooling:
/// per-address limits see one connection per request, as before).
///
/// This is the general-purpose client, on reqwest. Requests a client crate
/// will not send (malformed heads, slowloris, half-sent bodies) are written
/// by hand on raw sockets where they are used: `crate::attack` and the
/// hostile tests.
pub async fn http_exchange(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<HttpAnswer> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .local_address(from)
        .user_agent("HoldfastTest/1.0")
        .build()?;
    let method: reqwest::Method = method.parse()?;
    let mut req = client
        .request(method.clone(), format!("http://{addr}{path}"))
        .header("Connection", "close")
        .header("Content-Type", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    if body.is_some() || !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD) {
        req = req.body(body.unwrap_or_default().to_vec());
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).trim().to_owned(),
            )
        })
        .collect();
    let body = r.bytes().await?.to_vec();
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

/// A visitor over long-poll only.
#[derive(Debug)]
pub struct LpVisitor {
    pub http: SocketAddr,
    pub visitor: String,
    pub token: String,
    pub cursor: Seq,
    pub events: Vec<(Seq, VisitorEvent)>,
}

impl LpVisitor {
    pub async fn post(
        http: SocketAddr,
        req: &LongPollRequest,
    ) -> anyhow::Result<(u16, LongPollResponse)> {
        let body = serde_json::to_vec(req)?;
        let (status, body) = http_request(http, "POST", "/v1/visitor/lp", Some(&body)).await?;
        Ok((status, serde_json::from_slice(&body)?))
    }

    pub async fn connect(http: SocketAddr, site: &str) -> anyhow::Result<Self> {
        Ok(
            Self::connect_with(http, hello(site, None, None, "https://shop.example/lp"))
                .await?
                .0,
        )
    }

    /// A long-poll session opened with `hello`, and its welcome.
    pub async fn connect_with(
        http: SocketAddr,
        hello: VisitorIn,
    ) -> anyhow::Result<(Self, VisitorOut)> {
        Self::connect_with_headers(http, hello, &[]).await
    }

    /// A long-poll session opened with `hello` in a POST with extra header
    /// lines (`Accept-Language`, as a browser sends it), and its welcome.
    pub async fn connect_with_headers(
        http: SocketAddr,
        hello: VisitorIn,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(Self, VisitorOut)> {
        let body = serde_json::to_vec(&LongPollRequest {
            token: None,
            msgs: vec![hello],
        })?;
        let r = http_exchange(None, http, "POST", "/v1/visitor/lp", headers, Some(&body)).await?;
        let resp: LongPollResponse = serde_json::from_slice(&r.body)?;
        let Some(welcome @ VisitorOut::Welcome { visitor, token, .. }) = resp.msgs.first() else {
            anyhow::bail!("expected welcome, got {:?}", resp.msgs);
        };
        Ok((
            Self {
                http,
                visitor: visitor.clone(),
                token: token.clone(),
                cursor: 0,
                events: Vec::new(),
            },
            welcome.clone(),
        ))
    }

    pub async fn send(&self, msgs: Vec<VisitorIn>) -> anyhow::Result<Vec<VisitorOut>> {
        // The token goes in the header, as the widget sends it.
        let body = serde_json::to_vec(&LongPollRequest { token: None, msgs })?;
        let r = http_exchange(
            None,
            self.http,
            "POST",
            "/v1/visitor/lp",
            &[("X-Holdfast-Token", &self.token)],
            Some(&body),
        )
        .await?;
        let (status, resp): (u16, LongPollResponse) = (r.status, serde_json::from_slice(&r.body)?);
        anyhow::ensure!(
            status == 200,
            "long-poll POST status {status}: {:?}",
            resp.msgs
        );
        Ok(resp.msgs)
    }

    pub async fn say(&self, body: &str) -> anyhow::Result<VisitorOut> {
        let id = new_id();
        let mut r = self
            .send(vec![VisitorIn::Send {
                id,
                body: body.into(),
                attachment: None,
            }])
            .await?;
        r.pop().ok_or_else(|| anyhow::anyhow!("no reply"))
    }

    /// One poll: returns what arrived (possibly nothing, after the hold).
    pub async fn poll(&mut self) -> anyhow::Result<Vec<VisitorOut>> {
        let path = format!("/v1/visitor/poll?after={}", self.cursor);
        let r = http_exchange(
            None,
            self.http,
            "GET",
            &path,
            &[("X-Holdfast-Token", &self.token)],
            None,
        )
        .await?;
        let (status, body) = (r.status, r.body);
        anyhow::ensure!(status == 200, "poll status {status}");
        let resp: LongPollResponse = serde_json::from_slice(&body)?;
        for m in &resp.msgs {
            match m {
                VisitorOut::Event { seq, event } if *seq == self.cursor + 1 => {
                    self.cursor = *seq;
                    self.events.push((*seq, event.clone()));
                }
                VisitorOut::Snapshot { seq, .. } => self.cursor = *seq,
                _ => {}
            }
        }
        Ok(resp.msgs)
    }

    /// What people wrote, in order, without system lines.
    pub fn bodies(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                VisitorEvent::Message(m) if m.from != Sender::System => Some(m.body.clone()),
                _ => None,
            })
            .collect()
    }

    pub async fn wait_message(&mut self, body: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            self.poll().await?;
            if self
                .events
                .iter()
                .any(|(_, e)| matches!(e, VisitorEvent::Message(m) if m.body == body))
            {
                return Ok(());
            }
        }
        anyhow::bail!("message {body:?} never arrived over long-poll")
    }
}
