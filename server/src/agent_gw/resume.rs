//! Opening a session after its Login checked out: the LoginOk, the replay
//! or snapshot, the visitor list and the team, and the log catch-up that
//! fills a gap between the replay read and the hub's live queue. Split from
//! the gateway's connection loop because these are all reads from the store
//! and the hub, sent through the session machine in frame-sized pieces.

use std::sync::Arc;

use holdfast_protocol::agent::{LiveEvent, LoginOk, Resume, Seq, Snapshot, SnapshotPart};

use super::{Conn, End, Link, now, team_member};
use crate::Ctx;
use crate::store::Op;
use crate::store::reads;

/// Send a snapshot without exceeding a frame: when it does not fit in one,
/// `SnapshotPart`s carry the first pieces and the `Snapshot` the last. A
/// fresh device of an agent with 1.9 MB of history could never log in while
/// it had to fit one 1 MiB frame.
async fn send_snapshot(
    link: &mut Link,
    ctx: &Ctx,
    seq: Seq,
    conversations: Vec<holdfast_protocol::agent::ConversationInfo>,
    messages: Vec<holdfast_protocol::agent::ChatMessage>,
) -> Result<(), End> {
    let budget = ctx.cfg.live_budget();
    let mut part = SnapshotPart {
        conversations: Vec::new(),
        messages: Vec::new(),
    };
    enum Piece {
        Conversation(holdfast_protocol::agent::ConversationInfo),
        Message(holdfast_protocol::agent::ChatMessage),
    }
    let pieces = conversations
        .into_iter()
        .map(Piece::Conversation)
        .chain(messages.into_iter().map(Piece::Message));
    let mut size = 0;
    for piece in pieces {
        let n = match &piece {
            Piece::Conversation(c) => holdfast_protocol::agent::encoded_len(c),
            Piece::Message(m) => holdfast_protocol::agent::encoded_len(m),
        };
        if size + n > budget && size > 0 {
            let full = std::mem::replace(
                &mut part,
                SnapshotPart {
                    conversations: Vec::new(),
                    messages: Vec::new(),
                },
            );
            link.session.push_snapshot_part(full)?;
            link.flush().await?;
            size = 0;
        }
        size += n;
        match piece {
            Piece::Conversation(c) => part.conversations.push(c),
            Piece::Message(m) => part.messages.push(m),
        }
    }
    link.session.push_snapshot(Snapshot {
        seq,
        recovered: false,
        conversations: part.conversations,
        messages: part.messages,
    })?;
    link.flush().await
}

impl Conn {
    pub(super) async fn resume(
        &mut self,
        ctx: &Arc<Ctx>,
        after: Option<Seq>,
        commands_acked: Seq,
    ) -> Result<(), End> {
        let (agent, site) = (self.agent.id, self.agent.site);
        let oversees = self.agent.role.oversees();
        let (ticket, ticket_expires_ms) = crate::login::issue_ticket(ctx, &self.agent, self.device);
        let (floor, head) = ctx
            .reads
            .run(move |c| reads::agent_log_bounds(c, agent))
            .await?;
        let replay = after.filter(|a| *a >= floor && *a <= head);
        let login_ok = LoginOk {
            agent,
            display_name: self.agent.display_name.clone(),
            site,
            resume: match replay {
                Some(a) => Resume::Replay { after: a },
                None => Resume::Snapshot,
            },
            commands_acked,
            heartbeat_ms: u32::try_from(ctx.cfg.liveness.heartbeat.as_millis()).unwrap_or(u32::MAX),
            dead_after_ms: u32::try_from(ctx.cfg.liveness.dead_after.as_millis())
                .unwrap_or(u32::MAX),
            server_time_ms: crate::store::now_ms(),
            ticket,
            ticket_expires_ms,
        };
        // Logged in: the machine reads frames of the full size from here
        // and starts the silence clock now.
        self.link.session.accept_login(now(), login_ok)?;
        self.link.flush().await?;
        match replay {
            Some(_) => {
                ctx.metrics.resumes_replay.inc();
                self.catch_up(ctx, Seq::MAX).await?;
            }
            None => {
                ctx.metrics.resumes_snapshot.inc();
                // Head and contents must come from one read transaction, or
                // an event could be both in the snapshot and replayed after.
                let (seq, conversations, messages) = ctx
                    .reads
                    .run(move |c| {
                        crate::store::sql::read_snapshot(c, |c| {
                            let head = reads::log_head(c, &reads::agent_key(agent))?;
                            let (cs, ms) = reads::agent_snapshot(c, agent, site, oversees)?;
                            Ok((head, cs, ms))
                        })
                    })
                    .await?;
                send_snapshot(&mut self.link, ctx, seq, conversations, messages).await?;
            }
        }
        self.send_visitors(ctx).await?;
        self.send_team(ctx).await?;
        self.send_site_tags(ctx).await?;
        self.send_canned(ctx).await?;
        self.send_groups(ctx).await?;
        self.link.flush().await?;
        // This agent may take waiting conversations now.
        let _queued = ctx.writer.try_submit(Op::AssignQueued { site });
        Ok(())
    }

    /// The site's visitors online now, whole, then the latest invitation
    /// signal of each that has one (PROTOCOL.md 10.20): at login, and
    /// after dropped live events.
    pub(super) async fn send_visitors(&mut self, ctx: &Arc<Ctx>) -> Result<(), End> {
        // Shared with the site's other agents signing in now: encoded
        // once, sealed here (see `hub::visitor_list`).
        let list = ctx.hub.visitor_list(self.agent.site);
        let invitations = ctx.hub.invitations_of(&list.online);
        // Written as we go, so the machine's buffer holds a few messages,
        // not the whole list: 100 agents signing in at once to a site
        // with 5,000 visitors would otherwise buffer 120 MB.
        for m in &list.messages {
            self.link.session.live_encoded(m)?;
            self.link.flush_if_full().await?;
        }
        for ev in invitations {
            self.link.session.live(ev)?;
        }
        Ok(())
    }

    /// The whole team, replacing the client's list: after login, and after
    /// team updates were dropped for a full queue.
    pub(super) async fn send_team(&mut self, ctx: &Arc<Ctx>) -> Result<(), End> {
        let site = self.agent.site;
        let rows = ctx.reads.run(move |c| reads::team(c, site)).await?;
        let team = ctx
            .hub
            .team(rows.iter().map(|(r, n)| team_member(r, *n)).collect());
        Ok(self.link.session.live(LiveEvent::Team(team))?)
    }

    /// The site's tag list for the app's picker, at login. An admin's
    /// change later comes from the hub (`lists::watch`); a tag that left
    /// the list is refused by the `Tag` rule at once, since it reads the
    /// list afresh.
    pub(super) async fn send_site_tags(&mut self, ctx: &Arc<Ctx>) -> Result<(), End> {
        let site = self.agent.site;
        let tags = ctx
            .reads
            .run(move |c| {
                Ok(reads::site_by_id(c, site)?
                    .map(|s| s.tags)
                    .unwrap_or_default())
            })
            .await?;
        Ok(self.link.session.live(LiveEvent::SiteTags(tags))?)
    }

    /// Every canned reply this agent may use, replacing the app's list: at
    /// login, and each time the hub says one of its lists changed. Read
    /// when it is sent, so two changes close together end with the newer
    /// list, whatever order their notes came in.
    pub(super) async fn send_canned(&mut self, ctx: &Arc<Ctx>) -> Result<(), End> {
        let (site, agent) = (self.agent.site, self.agent.id);
        let list = ctx
            .reads
            .run(move |c| crate::canned::for_agent(c, site, agent))
            .await?;
        Ok(self.link.session.live(LiveEvent::Canned(list))?)
    }

    /// The site's invitation rules with their counts, to an admin, each
    /// time the hub says they changed. The role is read with them: one
    /// demoted since the session began gets nothing.
    pub(super) async fn send_invite_rules(&mut self, ctx: &Arc<Ctx>) -> Result<(), End> {
        let (site, agent) = (self.agent.site, self.agent.id);
        let list = ctx
            .reads
            .run(move |c| crate::invite::admin::for_admin_agent(c, site, agent))
            .await?;
        match list {
            Some(list) => Ok(self.link.session.live(LiveEvent::InviteRules(list))?),
            None => Ok(()),
        }
    }

    /// The site's groups with this agent's memberships (10.23): at login,
    /// read from the store (the hub's copy may be a second old); later
    /// changes come from the hub (`Hub::set_groups`).
    pub(super) async fn send_groups(&mut self, ctx: &Arc<Ctx>) -> Result<(), End> {
        let (site, agent) = (self.agent.site, self.agent.id);
        let now = crate::store::now_ms();
        let groups = ctx
            .reads
            .run(move |c| crate::groups::load_site(c, site, now))
            .await?;
        Ok(self
            .link
            .session
            .live(LiveEvent::Groups(groups.for_agent(agent)))?)
    }

    /// Send stored events after the last one sent, up to `until`.
    pub(super) async fn catch_up(&mut self, ctx: &Arc<Ctx>, until: Seq) -> Result<(), End> {
        let agent = self.agent.id;
        loop {
            let after = self.link.session.last_sent();
            let page = ctx
                .reads
                .run(move |c| reads::agent_events_after(c, agent, after, 512))
                .await?;
            let n = page.len();
            for (seq, event) in page {
                if seq > until {
                    break;
                }
                self.push_event(seq, event)?;
                self.link.flush_if_full().await?;
            }
            self.link.flush().await?;
            if n < 512 || self.link.session.last_sent() >= until {
                return Ok(());
            }
        }
    }
}
