//! What both visitor transports share: the hello (site key, origin, token
//! and bound identity), the snapshot a visitor without a usable cursor gets,
//! the rate gates, and [`handle_msg`], so a message means the same thing
//! whether it came over the WebSocket or in a long-poll POST.
//!
//! Nothing here knows either transport: [`super::ws`] and
//! [`super::long_poll`] call in, never the reverse, so neither can grow a
//! private meaning for a message.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use holdfast_protocol::agent::{AttachmentInfo, PageView, Seq, SiteId};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{self, PageInfo, VisitorIn, VisitorOut};

use crate::Ctx;
use crate::store::reads::{self, SiteRow};
use crate::store::writer::{VisitorFile, VisitorSendOutcome};
use crate::store::{Op, StoreError, now_ms};
use crate::throttle::SendGate;

/// A visitor, once its hello checked out.
#[derive(Debug)]
pub(super) struct Visitor {
    pub(super) id: String,
    pub(super) site: SiteId,
    /// The site's secret, for `identify`. The rest of the site's row is the
    /// greeting's ([`Greeting`]): a WebSocket session lives as long as the
    /// page, and 15,000 idle copies of the row and the token cost 6 MB.
    pub(super) secret: Option<Box<str>>,
    pub(super) user_agent: Option<String>,
    /// The client's address, for the per-address limits.
    pub(super) ip: IpAddr,
    /// The site group its hello named, if the site has it (10.23).
    pub(super) group: Option<String>,
}

pub(super) fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

pub(super) fn err(code: ErrorCode, message: impl Into<String>) -> VisitorOut {
    VisitorOut::Error {
        code,
        message: message.into(),
        id: None,
        retry_after_ms: None,
    }
}

/// An error answering the action `id`.
pub(super) fn err_for(id: MsgId, code: ErrorCode, message: impl Into<String>) -> VisitorOut {
    VisitorOut::Error {
        code,
        message: message.into(),
        id: Some(id),
        retry_after_ms: None,
    }
}

/// What a hello asks for, with where it came from.
pub(super) struct HelloReq {
    site: String,
    token: Option<String>,
    after: Option<Seq>,
    page: Option<PageInfo>,
    user_agent: Option<String>,
    v: Option<u16>,
    /// The page's origin (the `Origin` header), checked against the site's
    /// allowed origins.
    origin: Option<String>,
    /// The identity the page vouches for.
    identity: Option<visitor::IdentityProof>,
    /// The client's address (through trusted proxies).
    ip: IpAddr,
    /// The site group the widget targets, as the page wrote it.
    group: Option<String>,
    /// The visitor's language tag, put in shape (10.24): the hello's, else
    /// the request's `Accept-Language`; `None` when neither is one.
    lang: Option<String>,
}

impl HelloReq {
    /// The fields of a `hello`; `None` for any other message.
    /// `accept_language` is the header of the request the hello came in.
    pub(super) fn from_msg(
        msg: VisitorIn,
        origin: Option<String>,
        ua: Option<String>,
        accept_language: Option<&str>,
        ip: IpAddr,
    ) -> Option<Self> {
        match msg {
            VisitorIn::Hello {
                site,
                token,
                after,
                page,
                user_agent,
                v,
                identity,
                group,
                lang,
            } => Some(Self {
                site,
                token,
                after,
                page,
                user_agent: user_agent.or(ua),
                v,
                origin,
                identity,
                ip,
                group,
                lang: visitor_lang(lang.as_deref(), accept_language),
            }),
            _ => None,
        }
    }
}

/// What only the welcome needs.
#[derive(Debug)]
pub(super) struct Greeting {
    pub(super) site: SiteRow,
    /// The visitor's token, freshly issued.
    pub(super) token: String,
}

pub(super) struct HelloResult {
    pub(super) visitor: Visitor,
    pub(super) greeting: Greeting,
    pub(super) resumed: bool,
    pub(super) after: Seq,
}

/// Who would answer, as both transports send it.
pub(super) fn agents_out(a: crate::hub::Agents) -> VisitorOut {
    VisitorOut::Agents {
        online: a.online,
        groups: a.groups.map(|g| g.to_vec()),
    }
}

/// The answer to a good hello, the same on both transports.
pub(super) fn welcome(ctx: &Ctx, v: &Visitor, g: &Greeting, resumed: bool) -> VisitorOut {
    // The same state later `agents` messages carry (`Hub::agents_for`).
    let agents = ctx.hub.agents_for(v.site, v.group.as_deref());
    VisitorOut::Welcome {
        visitor: v.id.clone(),
        token: g.token.clone(),
        resumed,
        agents_online: agents.online,
        heartbeat_ms: u32::try_from(ctx.cfg.visitor.liveness.heartbeat.as_millis())
            .unwrap_or(u32::MAX),
        attach: Some({
            let rules = ctx.attach.site_policy(&g.site);
            holdfast_protocol::visitor::AttachRules {
                max_bytes: rules.max_size,
                types: rules.kinds.iter().map(|k| k.mime().to_string()).collect(),
            }
        }),
        sneak_peek: Some(g.site.sneak_peek),
        group: v.group.clone(),
        // Sent even with a group named: the widget offers the choice only
        // when neither the page nor the visitor has chosen.
        groups: agents.groups.map(|g| g.to_vec()),
    }
}

/// Validate a hello: site key, origin, token (if any), create or refresh the
/// visitor.
pub(super) async fn hello(ctx: &Arc<Ctx>, req: HelloReq) -> Result<HelloResult, VisitorOut> {
    let HelloReq {
        site,
        token,
        after,
        page,
        user_agent,
        v,
        origin,
        identity,
        ip,
        group,
        lang,
    } = req;
    let version = v.unwrap_or(1);
    if version != holdfast_protocol::VISITOR_PROTOCOL_VERSION {
        return Err(err(
            ErrorCode::VersionMismatch,
            format!(
                "protocol version mismatch: server speaks {}, widget speaks {version}",
                holdfast_protocol::VISITOR_PROTOCOL_VERSION
            ),
        ));
    }
    let key = site.clone();
    let site = ctx
        .reads
        .run(move |c| reads::site_by_key(c, &key))
        .await
        .map_err(store_err)?
        .ok_or_else(|| err(ErrorCode::NotFound, format!("unknown site key {site:?}")))?;
    if !site.allows_origin(origin.as_deref()) {
        ctx.metrics.rejected_frames.inc();
        return Err(err(
            ErrorCode::Forbidden,
            format!(
                "site {:?} does not allow its chat on {}; add the origin with `holdfast-server site origins`",
                site.key,
                origin.as_deref().unwrap_or("this page")
            ),
        ));
    }
    let expired = || {
        ctx.metrics.rejected_frames.inc();
        err(
            ErrorCode::Unauthorized,
            "invalid or expired visitor token; start a new session without it",
        )
    };
    let known = match token {
        None => None,
        Some(t) => match ctx.tokens.verify(&t, ctx.cfg.visitor.token_lifetime) {
            Some((id, s)) if s == site.id => {
                // An old-format token carries no issue time: it stands for
                // a visitor seen within a token's lifetime, and this
                // welcome replaces it.
                if crate::token::TokenKey::is_legacy(&t) {
                    let vid = id.clone();
                    let seen = ctx
                        .reads
                        .run(move |c| reads::visitor_last_seen(c, &vid))
                        .await
                        .map_err(store_err)?;
                    let lifetime_ms = i64::try_from(ctx.cfg.visitor.token_lifetime.as_millis())
                        .unwrap_or(i64::MAX);
                    if seen.is_none_or(|at| now_ms().saturating_sub(at) > lifetime_ms) {
                        return Err(expired());
                    }
                }
                Some(id)
            }
            _ => return Err(expired()),
        },
    };
    // A token that belongs to a verified identity resumes only with that
    // identity: another signed-in user of the same browser (or a copied
    // token) starts a new visitor instead of reading this one's chat.
    let known = match known {
        Some(id) => {
            let bound = bound_identity(ctx, &id).await?;
            let proven = |want: &str| {
                identity.as_ref().is_some_and(|p| {
                    p.id == want
                        && matches!((&site.secret, &p.hash), (Some(secret), Some(h))
                            if crate::token::verify_identity(secret, &p.id, h))
                })
            };
            match (bound, &site.secret) {
                (Some(external), Some(_)) if !proven(&external) => None,
                // A site that dropped its secret can verify nobody any
                // more; its visitors resume as any unverified one does.
                _ => Some(id),
            }
        }
        None => None,
    };
    if known.is_none()
        && let Err(l) = ctx.visitor_limits.new_visitor(ip)
    {
        ctx.metrics.visitor_limited.inc();
        return Err(VisitorOut::Error {
            code: ErrorCode::RateLimited,
            message: l.message("new visitors"),
            id: None,
            retry_after_ms: Some(ms(l.retry_after)),
        });
    }
    let site_id = site.id;
    let (who, addr) = (known.clone(), ip.to_string());
    let blocked = ctx
        .reads
        .run(move |c| reads::blocked(c, site_id, who.as_deref(), Some(&addr)))
        .await
        .map_err(store_err)?;
    if blocked {
        // The same words whatever the reason an agent wrote down: that is
        // for the site's staff. The widget shows nothing after this.
        return Err(err(
            ErrorCode::Forbidden,
            "this site's chat is not available to you",
        ));
    }
    // An unknown group is no group: the visitor chats with the whole site
    // rather than with no one, and the site's staff learn of the typo.
    let group = match group.filter(|g| !g.trim().is_empty()) {
        None => None,
        Some(g) => {
            let key = crate::groups::normalize_key(&g);
            let found = match key {
                Some(k) => ctx
                    .reads
                    .run(move |c| crate::groups::by_key(c, site_id, &k))
                    .await
                    .map_err(store_err)?,
                None => None,
            };
            if found.is_none() {
                crate::groups::unknown_key(site_id, &g);
            }
            found.map(|f| f.key)
        }
    };
    let ua = user_agent.clone();
    let page = page.map(page_view);
    let id = ctx
        .writer
        .call(|reply| Op::VisitorHello {
            site: site_id,
            visitor: known.clone(),
            ip: ip.to_string(),
            user_agent: ua,
            page,
            group: group.clone(),
            lang,
            reply,
        })
        .await
        .map_err(store_err)?;
    let token = ctx
        .tokens
        .issue(&id, site.id)
        .ok_or_else(|| err(ErrorCode::Internal, "cannot issue a token"))?;
    // A new identity (unknown or fresh token) has no history to resume: it
    // replays its (empty) log from the start. A known one without a cursor
    // has lost its local state (another browser, cleared storage) and gets
    // a snapshot, as the spec says, rather than every event since seq 1.
    let (after, resumable) = if known.as_deref() == Some(id.as_str()) {
        (after.unwrap_or(0), after.is_some())
    } else {
        (0, true)
    };
    let vid = id.clone();
    let (floor, head) = ctx
        .reads
        .run(move |c| reads::visitor_log_bounds(c, &vid))
        .await
        .map_err(store_err)?;
    let visitor = Visitor {
        id,
        site: site.id,
        secret: site.secret.as_deref().map(Box::from),
        user_agent,
        ip,
        group,
    };
    Ok(HelloResult {
        resumed: resumable && after >= floor && after <= head,
        after,
        visitor,
        greeting: Greeting { site, token },
    })
}

pub(super) fn store_err(e: StoreError) -> VisitorOut {
    tracing::warn!("visitor request failed in storage: {e}");
    err(
        ErrorCode::Unavailable,
        "the server cannot store that right now; it will be retried",
    )
}

fn page_view(p: PageInfo) -> PageView {
    PageView {
        url: p.url,
        title: p.title,
        referrer: p.referrer.filter(|r| !r.is_empty()),
        at_ms: now_ms(),
    }
}

fn record_page(ctx: &Arc<Ctx>, v: &Visitor, p: PageInfo) {
    let page = page_view(p);
    ctx.hub.visitor_page(&v.id, page.clone(), None);
    if !ctx.writer.try_submit(Op::PageView {
        visitor: v.id.clone(),
        page,
    }) {
        tracing::warn!("page view dropped: writer queue full");
    }
}

/// Stored visitor record with live bits, for registering with the hub.
pub(super) async fn visitor_info(
    ctx: &Arc<Ctx>,
    v: &Visitor,
) -> Result<holdfast_protocol::agent::VisitorInfo, VisitorOut> {
    let id = v.id.clone();
    let mut info = ctx
        .reads
        .run(move |c| reads::visitor_info(c, &id))
        .await
        .map_err(store_err)?
        .ok_or_else(|| err(ErrorCode::Internal, "visitor vanished"))?;
    info.user_agent = v.user_agent.clone().or(info.user_agent);
    info.online = true;
    Ok(info)
}

/// Which of a connection's acks must be written. An ack is stored only to
/// tell agents their messages were delivered, so one that covers none of
/// an agent's messages tells nobody anything, and most acks are of the
/// visitor's own messages coming back: each was a write of its own.
/// Conservative where it cannot see: the first ack of a connection, and
/// whatever a replay sent, count as covering an agent's message.
#[derive(Debug)]
pub(super) struct Receipts {
    /// The lowest seq that may hold an agent's message not yet receipted.
    lowest: Option<Seq>,
    /// The highest such seq sent.
    highest: Seq,
}

impl Receipts {
    /// A connection whose greeting sent everything up to `sent`.
    pub(super) fn new(sent: Seq) -> Self {
        Self {
            lowest: Some(0),
            highest: sent,
        }
    }

    /// Events `(from, to]` were sent unread (a replay, a snapshot).
    pub(super) fn replayed(&mut self, from: Seq, to: Seq) {
        if to > from {
            self.may_hold(from + 1, to);
        }
    }

    /// Event `seq` was sent: an agent's message needs a receipt.
    pub(super) fn sent(&mut self, seq: Seq, event: &visitor::VisitorEvent) {
        if let visitor::VisitorEvent::Message(m) = event
            && m.from == visitor::Sender::Agent
        {
            self.may_hold(seq, seq);
        }
    }

    fn may_hold(&mut self, low: Seq, high: Seq) {
        self.lowest = Some(self.lowest.map_or(low, |l| l.min(low)));
        self.highest = self.highest.max(high);
    }

    /// The visitor acked everything up to `up_to`: whether to write it.
    pub(super) fn acked(&mut self, up_to: Seq) -> bool {
        match self.lowest {
            Some(low) if up_to >= low => {
                self.lowest = (up_to < self.highest).then_some(up_to + 1);
                true
            }
            _ => false,
        }
    }
}

/// Handle one post-hello message; returns the reply, if any.
pub(super) async fn handle_msg(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    gate: &mut SendGate,
    msg: VisitorIn,
    sent: Seq,
) -> Option<VisitorOut> {
    match msg {
        VisitorIn::Hello { .. } => Some(err(ErrorCode::BadRequest, "already said hello")),
        VisitorIn::Ping => Some(VisitorOut::Pong),
        VisitorIn::Typing { typing, draft } => {
            crate::typing::from_visitor(ctx, &v.id, typing, draft).await;
            None
        }
        VisitorIn::Send {
            id,
            body,
            attachment,
        } => {
            ctx.hub.visitor_typing_reset(&v.id);
            Some(send(ctx, v, gate, id, body, None, attachment).await)
        }
        VisitorIn::LeaveMessage { id, body, email } => {
            Some(send(ctx, v, gate, id, body, Some(email), None).await)
        }
        VisitorIn::EndChat { id } => {
            if let Err(r) = gate.admit(id, Instant::now()) {
                return Some(rate_limited(id, r));
            }
            if let Some(r) = shared_limits(ctx, v, gate, id) {
                return Some(r);
            }
            let visitor = v.id.clone();
            let r = ctx
                .writer
                .call(|reply| Op::VisitorEndChat { visitor, id, reply })
                .await;
            Some(action_reply(ctx, id, r))
        }
        VisitorIn::Page(p) => {
            if let Err(l) = ctx.visitor_limits.page(&v.id, v.ip) {
                return Some(limited(ctx, l, "page views"));
            }
            record_page(ctx, v, p);
            None
        }
        VisitorIn::Identify {
            id,
            name,
            email,
            hash,
            attrs,
        } => {
            if let Err(l) = ctx.visitor_limits.identify(&v.id, v.ip) {
                return Some(limited(ctx, l, "identifies"));
            }
            let verified = match (&v.secret, hash) {
                (Some(secret), Some(h)) if crate::token::verify_identity(secret, &id, &h) => true,
                (Some(_), _) => {
                    ctx.metrics.rejected_frames.inc();
                    return Some(err(
                        ErrorCode::BadIdentity,
                        "identify rejected: this site requires hash = HMAC-SHA256(site secret, id) and it did not match",
                    ));
                }
                (None, _) => false,
            };
            let attrs = attrs
                .iter()
                .map(|(k, val)| (k.clone(), visitor::attr_text(val)))
                .collect();
            let visitor = v.id.clone();
            let r = ctx
                .writer
                .call(|reply| Op::Identify {
                    visitor,
                    external_id: id,
                    name,
                    email,
                    attrs,
                    verified,
                    reply,
                })
                .await;
            match r {
                Ok(true) => None,
                // This visitor is bound to another verified identity (the
                // browser now belongs to someone else): the client starts a
                // new visitor, and identifies that one.
                Ok(false) => Some(err(
                    ErrorCode::Unauthorized,
                    "this visitor belongs to another signed-in user; start a new session without the token",
                )),
                Err(e) => Some(store_err(e)),
            }
        }
        VisitorIn::Invitation { id, event } => {
            crate::invite::seen(ctx, v.site, &v.id, id, event).await;
            None
        }
        VisitorIn::Ack { seq } => {
            if !ctx.writer.try_submit(Op::Delivered {
                visitor: v.id.clone(),
                up_to: seq.min(sent),
            }) {
                tracing::debug!("delivery receipt dropped: writer queue full");
            }
            None
        }
    }
}

async fn send(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    gate: &mut SendGate,
    id: MsgId,
    body: String,
    leave: Option<Option<String>>,
    attachment: Option<String>,
) -> VisitorOut {
    if let Err(r) = gate.admit(id, Instant::now()) {
        return rate_limited(id, r);
    }
    if let Some(r) = shared_limits(ctx, v, gate, id) {
        return r;
    }
    let attachment = match attachment {
        None => None,
        Some(aid) => match visitor_file(ctx, v, &aid).await {
            Ok(f) => Some(f),
            Err((code, message)) => {
                return VisitorOut::Error {
                    code,
                    message,
                    id: Some(id),
                    retry_after_ms: None,
                };
            }
        },
    };
    // A left message shows agents the page it was left on.
    let page = leave
        .as_ref()
        .and_then(|_| ctx.hub.visitor_live(&v.id))
        .and_then(|info| info.trail.last().cloned());
    let (visitor, site) = (v.id.clone(), v.site);
    let r = ctx
        .writer
        .call(|reply| Op::VisitorSend {
            visitor,
            site,
            id,
            body,
            leave,
            page,
            attachment,
            reply,
        })
        .await;
    action_reply(ctx, id, r)
}

/// The complete upload `aid` of this visitor, as a message carries it.
/// Looked up here, before the writer, so storage reads never hold it up;
/// another visitor's file and an unknown id get the same answer.
async fn visitor_file(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    aid: &str,
) -> Result<VisitorFile, (ErrorCode, String)> {
    let unavailable = |e: std::io::Error| {
        tracing::warn!(error = %e, "reading attachment metadata for a message");
        (
            ErrorCode::Unavailable,
            "attachment storage is unavailable; send this again shortly".to_string(),
        )
    };
    let not_found = || {
        (
            ErrorCode::NotFound,
            format!("no file {aid:?} of yours: upload it in this chat first"),
        )
    };
    match ctx.attach.meta(aid).await.map_err(unavailable)? {
        Some(m) if m.visitor == v.id && m.site == v.site => Ok(VisitorFile {
            info: AttachmentInfo {
                id: m.id.clone(),
                name: m.name.clone(),
                mime: m.mime.clone(),
                size: m.size,
                image: m.thumb.is_some(),
            },
            conversation: m.conversation,
        }),
        Some(_) => Err(not_found()),
        None => match ctx.attach.load(aid).await.map_err(unavailable)? {
            Some(u) if u.visitor == v.id && u.site == v.site => Err((
                ErrorCode::Conflict,
                format!(
                    "the upload of {:?} is not complete yet ({} of {} bytes): send the message once it is",
                    u.name, u.offset, u.length
                ),
            )),
            _ => Err(not_found()),
        },
    }
}

/// The visitor's and the address's share, after the connection's own: a
/// refusal (`Some`) holds the action's place in the order like any other.
fn shared_limits(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    gate: &mut SendGate,
    id: MsgId,
) -> Option<VisitorOut> {
    let Err(l) = ctx.visitor_limits.message(&v.id, v.ip) else {
        return None;
    };
    ctx.metrics.visitor_limited.inc();
    gate.hold(id, Instant::now(), l.retry_after);
    Some(VisitorOut::Error {
        code: ErrorCode::RateLimited,
        message: format!(
            "{}; send this again then, before anything after it",
            l.message("messages")
        ),
        id: Some(id),
        retry_after_ms: Some(ms(l.retry_after)),
    })
}

/// A refused page view or identify: nothing to resend by id, but the
/// client learns when the next one will be taken.
fn limited(ctx: &Ctx, l: crate::limits::Limited, what: &str) -> VisitorOut {
    ctx.metrics.visitor_limited.inc();
    VisitorOut::Error {
        code: ErrorCode::RateLimited,
        message: l.message(what),
        id: None,
        retry_after_ms: Some(ms(l.retry_after)),
    }
}

fn rate_limited(id: MsgId, r: crate::throttle::Refused) -> VisitorOut {
    let message = match r.waiting_for {
        Some(first) => {
            format!("sending too fast; {first} was refused first: send it again, then this one")
        }
        None => "sending too fast; send this again shortly, before anything after it".into(),
    };
    VisitorOut::Error {
        code: ErrorCode::RateLimited,
        message,
        id: Some(id),
        retry_after_ms: Some(
            u32::try_from(r.retry_after.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
        ),
    }
}

/// The answer to a visitor action: its ack once durable, or why not.
fn action_reply(
    ctx: &Arc<Ctx>,
    id: MsgId,
    r: Result<VisitorSendOutcome, StoreError>,
) -> VisitorOut {
    match r {
        Ok(VisitorSendOutcome::Done {
            conversation,
            message,
            at_ms,
        }) => {
            ctx.metrics.messages_in.inc();
            VisitorOut::Ack {
                id,
                conversation,
                message,
                at_ms,
            }
        }
        Ok(VisitorSendOutcome::Rejected { code, message }) => err_for(id, code, message),
        Err(e) => match store_err(e) {
            VisitorOut::Error { code, message, .. } => err_for(id, code, message),
            other => other,
        },
    }
}

/// The client's address: the peer's, or, when the peer is a trusted
/// reverse proxy, the nearest address in `X-Forwarded-For` that is not one
/// of them (what a client puts further left it could have made up). A hop
/// that is not an address ends the walk at the last trusted one: what lies
/// left of it cannot be told apart from what a client wrote.
pub(crate) fn client_ip(ctx: &Ctx, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let trusted = &ctx.cfg.visitor.trusted_proxies;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return peer.ip();
    }
    let mut hops: Vec<&str> = Vec::new();
    for h in headers.get_all("x-forwarded-for") {
        // A header that is not text is unreadable as a whole: the chain
        // ends at the proxy.
        let Ok(h) = h.to_str() else {
            return peer.ip();
        };
        hops.extend(h.split(','));
    }
    let mut nearest = peer.ip();
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop_address(hop.trim()) else {
            return nearest;
        };
        if !is_trusted(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// An `X-Forwarded-For` entry: an address, or one with a port
/// (`203.0.113.9:4711`, `[2001:db8::1]:4711`) as some proxies write it.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The page's origin. An opaque origin (`null`: sandboxed iframes, data:
/// URLs) is kept as "null", which no allow-list contains, so a site with a
/// list cannot be embedded from anywhere through a sandbox.
pub(super) fn client_origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

/// A visitor's language (10.24): the hello's when it is a language tag,
/// else the first of the request's `Accept-Language`. A hello's value that
/// is not a tag (markup, a sentence) is dropped here, never stored or shown
/// to an agent; the visitor is not refused for it.
fn visitor_lang(hello: Option<&str>, accept_language: Option<&str>) -> Option<String> {
    if let Some(raw) = hello.filter(|s| !s.trim().is_empty()) {
        match visitor::lang_tag(raw) {
            Some(tag) => return Some(tag),
            None => tracing::debug!(lang = ?raw, "hello.lang is not a language tag; dropped"),
        }
    }
    accept_language.and_then(visitor::accept_language_tag)
}

/// The `Accept-Language` header, when it is text; only its first entry is
/// ever read (10.24).
pub(super) fn client_accept_language(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

pub(super) fn client_ua(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.chars().take(512).collect())
}

pub(super) async fn snapshot(ctx: &Arc<Ctx>, v: &Visitor) -> Result<VisitorOut, VisitorOut> {
    let id = v.id.clone();
    ctx.reads
        .run(move |c| {
            crate::store::sql::read_snapshot(c, |c| {
                let head = reads::log_head(c, &reads::visitor_key(&id))?;
                let (conversation, messages) = reads::visitor_snapshot(c, &id)?;
                Ok(VisitorOut::Snapshot {
                    seq: head,
                    recovered: false,
                    conversation,
                    messages,
                })
            })
        })
        .await
        .map_err(store_err)
}

/// The verified identity `visitor` is bound to, if any.
pub(super) async fn bound_identity(ctx: &Ctx, visitor: &str) -> Result<Option<String>, VisitorOut> {
    let vid = visitor.to_owned();
    ctx.reads
        .run(move |c| reads::verified_identity(c, &vid))
        .await
        .map_err(store_err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use holdfast_protocol::ids::MsgId;
    use holdfast_protocol::visitor::{Sender, VisitorEvent, VisitorMessage};

    use super::Receipts;

    fn said(from: Sender) -> VisitorEvent {
        VisitorEvent::Message(VisitorMessage {
            conversation: 1,
            message: 1,
            id: MsgId([0; 16]),
            from,
            name: None,
            body: "hi".into(),
            at_ms: 0,
            notice: None,
            attachment: None,
        })
    }

    #[test]
    fn only_acks_that_cover_an_agents_message_are_written() {
        // The greeting sent up to 4: the first ack is written, whatever it
        // covers, and so is each until 4 is covered.
        let mut r = Receipts::new(4);
        assert!(r.acked(2));
        assert!(r.acked(4));
        // The visitor's own messages and system lines come back: no write.
        r.sent(5, &said(Sender::Visitor));
        r.sent(6, &said(Sender::System));
        assert!(!r.acked(5));
        assert!(!r.acked(6));
        // Two of an agent's messages: acks up to and past each are written,
        // and none after.
        r.sent(7, &said(Sender::Agent));
        r.sent(8, &said(Sender::Visitor));
        r.sent(9, &said(Sender::Agent));
        assert!(r.acked(7));
        assert!(
            r.acked(8),
            "may cover 9's predecessors: written, to be safe"
        );
        assert!(r.acked(9));
        assert!(!r.acked(9));
        r.sent(10, &said(Sender::Visitor));
        assert!(!r.acked(10));
        // A catch-up read sent 11..=13 unseen: written until covered.
        r.replayed(10, 13);
        assert!(r.acked(11));
        assert!(r.acked(13));
        assert!(!r.acked(13));
        // One ack past several of an agent's messages covers them all.
        r.sent(14, &said(Sender::Agent));
        r.sent(15, &said(Sender::Agent));
        assert!(r.acked(15));
        assert!(!r.acked(15));
    }
}
