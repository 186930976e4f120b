//! Who may log in, and what an unauthenticated connection may cost.
//!
//! - [`PreAuthPool`]: connections that have not logged in yet live in a
//!   pool of their own, smaller than the logged-in one and capped per
//!   address, with small frames and a short deadline. When it is full, a
//!   newcomer from a less crowded address takes the place of the oldest
//!   connection of the most crowded one, so a flood of silent sockets from a
//!   few addresses can never keep a fresh address from logging in, and can
//!   never touch sessions that are already logged in.
//! - [`authenticate`]: a resume ticket, or a password under the login
//!   throttle. Only failures lock out, but attempts in flight are bounded
//!   before their check starts (the ones past the bound wait, not refused),
//!   under the source address and the (username, address) pair, never the
//!   username alone; unknown usernames cost no password hash; and per-address limits
//!   are checked before an attempt queues for the hash.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_protocol::agent::Login;
use holdfast_protocol::error::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::store::reads::{self, AgentRow};
use crate::store::{StoreError, now_ms};
use crate::throttle::{Attempt, NotYet};
use crate::ticket::Ticket;

// ---------------------------------------------------------------- pre-auth pool

#[derive(Debug, Clone)]
pub struct PreAuthConfig {
    /// Connections not logged in yet, in all.
    pub max: usize,
    /// …and from one address.
    pub max_per_ip: usize,
    /// The largest frame before login: a hello and a Login fit in a few
    /// hundred bytes, so a peer cannot park a megabyte per socket.
    pub max_frame: usize,
    /// From accept to a complete Login frame.
    pub deadline: Duration,
}

impl Default for PreAuthConfig {
    fn default() -> Self {
        Self {
            max: 1024,
            max_per_ip: 32,
            max_frame: 8 * 1024,
            deadline: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Waiting {
    id: u64,
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct PoolState {
    by_ip: HashMap<IpAddr, VecDeque<Waiting>>,
    total: usize,
    next: u64,
}

#[derive(Debug)]
pub struct PreAuthPool {
    cfg: PreAuthConfig,
    state: Mutex<PoolState>,
}

/// A place in the pool; leaving it (drop) frees it. `cancelled` fires when
/// a newcomer took the place.
#[derive(Debug)]
pub struct PreAuthSlot {
    pool: Arc<PreAuthPool>,
    ip: IpAddr,
    id: u64,
    pub cancelled: CancellationToken,
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        let mut removed = false;
        if let Some(q) = st.by_ip.get_mut(&self.ip) {
            let before = q.len();
            q.retain(|w| w.id != self.id);
            removed = q.len() < before;
            if q.is_empty() {
                st.by_ip.remove(&self.ip);
            }
        }
        if removed {
            st.total = st.total.saturating_sub(1);
        }
    }
}

impl PreAuthPool {
    pub fn new(cfg: PreAuthConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            state: Mutex::new(PoolState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &PreAuthConfig {
        &self.cfg
    }

    /// Connections waiting to log in now.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for a new connection from `ip`, or `None` (refuse it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PreAuthSlot> {
        let ip = crate::limits::addr_key(ip);
        let mut st = self.lock();
        let mine = st.by_ip.get(&ip).map_or(0, VecDeque::len);
        if mine >= self.cfg.max_per_ip {
            return None;
        }
        if st.total >= self.cfg.max {
            // Evict the oldest connection of the most crowded address, if
            // it is more crowded than this one.
            let crowded = st
                .by_ip
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(ip, q)| (*ip, q.len()))?;
            if crowded.1 <= mine + 1 {
                return None;
            }
            let q = st.by_ip.get_mut(&crowded.0)?;
            let victim = q.pop_front()?;
            if q.is_empty() {
                st.by_ip.remove(&crowded.0);
            }
            st.total -= 1;
            victim.cancel.cancel();
        }
        st.next += 1;
        let id = st.next;
        let cancel = CancellationToken::new();
        st.by_ip.entry(ip).or_default().push_back(Waiting {
            id,
            cancel: cancel.clone(),
        });
        st.total += 1;
        Some(PreAuthSlot {
            pool: self.clone(),
            ip,
            id,
            cancelled: cancel,
        })
    }
}

// ---------------------------------------------------------------- authentication

/// Why a login was refused, as the client hears it.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// For the log.
    pub why: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            why: why.into(),
        }
    }
}

/// How a login was allowed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Password,
    Ticket,
}

fn throttle_keys(username: &str, ip: IpAddr) -> (Vec<String>, Vec<String>) {
    let ip = crate::limits::addr_key(ip);
    (
        vec![format!("ip:{ip}")],
        vec![format!("u:{}@{ip}", username.to_lowercase())],
    )
}

/// Check a Login: its ticket, or its password. `Err` carries what to tell
/// the client.
pub async fn authenticate(
    ctx: &Arc<Ctx>,
    login: &Login,
    ip: IpAddr,
) -> Result<(AgentRow, Proof), Refusal> {
    let username = login.username.clone();
    let row = ctx
        .reads
        .run(move |c| reads::agent_by_username(c, &username))
        .await
        .map_err(store_refusal)?;
    if let Some(t) = &login.ticket
        && let Some(row) = row.as_ref().filter(|r| ticket_ok(ctx, t, r, login))
    {
        if row.disabled {
            return Err(disabled(row));
        }
        ctx.metrics.logins_by_ticket.inc();
        return Ok((row.clone(), Proof::Ticket));
    }
    // A password attempt: bounded before it starts, under the address and
    // the name at that address.
    let (ip_keys, user_keys) = throttle_keys(&login.username, ip);
    let (ip_attempt, user_attempt) = match begin_attempts(ctx, ip_keys, user_keys).await {
        Ok(a) => a,
        Err(wait) => {
            ctx.metrics.logins_throttled.inc();
            return Err(Refusal {
                code: ErrorCode::Throttled,
                message: format!(
                    "too many failed logins; try again in {} s",
                    wait.as_secs().max(1)
                ),
                retry_after: Some(wait),
                why: "throttled".into(),
            });
        }
    };
    let verified = match &row {
        Some(r) => {
            let hash = r.password_hash.clone();
            let password = zeroize::Zeroizing::new(login.password.clone());
            // Each Argon2 check takes 19 MiB and a core for tens of ms.
            // Without a bound, a reconnect storm of 100 agents ran them all
            // at once and the server's RSS jumped by over 100 MB
            // (BENCHMARKS.md, reconnect storm). Logins queue here instead,
            // one per core, and only after the throttle let them in.
            match password_gate().acquire().await {
                Ok(_permit) => {
                    ctx.metrics.password_checks.inc();
                    tokio::task::spawn_blocking(move || {
                        crate::auth::verify_password(&password, Some(&hash))
                    })
                    .await
                    .unwrap_or(false)
                }
                Err(_) => false,
            }
        }
        None => {
            // An unknown name costs no hash (a flood of made-up names must
            // not fill the hash queue), but takes as long as a wrong
            // password would, so names cannot be told apart by timing.
            tokio::time::sleep(crate::auth::typical_verify_time()).await;
            false
        }
    };
    let row = match row {
        Some(r) if verified => r,
        _ => {
            ip_attempt.fail(Instant::now());
            user_attempt.fail(Instant::now());
            ctx.metrics.login_failures.inc();
            // Slow every failure down a little more than a success costs.
            tokio::time::sleep(ctx.cfg.login_failure_delay).await;
            return Err(Refusal::new(
                ErrorCode::Unauthorized,
                "wrong username or password",
                format!("wrong password for {:?}", login.username),
            ));
        }
    };
    // A right password clears this address's count: one office typo
    // later in the day is a first failure again.
    ip_attempt.succeed();
    user_attempt.succeed();
    if row.disabled {
        return Err(disabled(&row));
    }
    Ok((row, Proof::Password))
}

/// The longest a password login waits for earlier attempts from its
/// address to be decided before it is told to come back later. Far more
/// than an office's worth of password checks takes, queued one per core.
const ATTEMPT_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// Start a password attempt under both keys, or say how long they are
/// locked out. An attempt past the in-flight bound waits for earlier ones
/// to be decided instead of being refused: a right password from a busy
/// address (an office behind one NAT) must never be turned away because
/// others from that address are being checked, while a flood of guesses
/// from it still gets no more than the free ones checked before the
/// lock-out.
async fn begin_attempts<'a>(
    ctx: &'a Ctx,
    ip_keys: Vec<String>,
    user_keys: Vec<String>,
) -> Result<(Attempt<'a>, Attempt<'a>), Duration> {
    let deadline = tokio::time::Instant::now() + ATTEMPT_QUEUE_WAIT;
    loop {
        // Registered before the check, so a decision in between wakes us.
        let ip_changed = ctx.ip_throttle.changed();
        let user_changed = ctx.throttle.changed();
        tokio::pin!(ip_changed, user_changed);
        ip_changed.as_mut().enable();
        user_changed.as_mut().enable();
        let now = Instant::now();
        let busy = match ctx.ip_throttle.begin(ip_keys.clone(), now) {
            Err(NotYet::Locked(wait)) => return Err(wait),
            Err(NotYet::Busy) => ip_changed,
            Ok(ip_attempt) => match ctx.throttle.begin(user_keys.clone(), now) {
                Ok(user_attempt) => return Ok((ip_attempt, user_attempt)),
                Err(not_yet) => {
                    // Not started for the name: no password was tried from
                    // the address, so its count does not move.
                    ip_attempt.cancel();
                    match not_yet {
                        NotYet::Locked(wait) => return Err(wait),
                        NotYet::Busy => user_changed,
                    }
                }
            },
        };
        if tokio::time::timeout_at(deadline, busy).await.is_err() {
            return Err(ctx.cfg.throttle.first_lockout);
        }
    }
}

fn disabled(row: &AgentRow) -> Refusal {
    Refusal::new(
        ErrorCode::Disabled,
        "this agent account is disabled",
        format!("{} is disabled", row.username),
    )
}

fn store_refusal(e: StoreError) -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        "the server cannot check logins right now; try again",
        format!("storage: {e}"),
    )
}

fn ticket_ok(ctx: &Ctx, bytes: &[u8], row: &AgentRow, login: &Login) -> bool {
    ctx.tickets.open(bytes).is_some_and(|t| {
        t.agent == row.id
            && t.device == login.device_id
            && t.auth_epoch == row.auth_epoch
            && t.expires_ms > now_ms()
    })
}

/// A fresh ticket for this device, valid for the configured lifetime.
pub fn issue_ticket(
    ctx: &Ctx,
    row: &AgentRow,
    device: holdfast_protocol::ids::MsgId,
) -> (Vec<u8>, i64) {
    let expires_ms = now_ms()
        .saturating_add(i64::try_from(ctx.cfg.ticket_lifetime.as_millis()).unwrap_or(i64::MAX));
    let t = Ticket {
        agent: row.id,
        device,
        auth_epoch: row.auth_epoch,
        expires_ms,
    };
    (ctx.tickets.issue(&t), expires_ms)
}

/// How long after issuing a ticket a live connection is sent a fresh one:
/// half its life, so the device always holds one with at least half its
/// life left (a second, at least, so a zero lifetime cannot spin).
pub fn ticket_renewal(ctx: &Ctx) -> Duration {
    (ctx.cfg.ticket_lifetime / 2).max(Duration::from_secs(1))
}

/// At most one password verification per core at a time.
fn password_gate() -> &'static tokio::sync::Semaphore {
    static GATE: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    GATE.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(max: usize, per_ip: usize) -> Arc<PreAuthPool> {
        PreAuthPool::new(PreAuthConfig {
            max,
            max_per_ip: per_ip,
            ..PreAuthConfig::default()
        })
    }

    #[test]
    fn a_fresh_address_always_finds_a_place() {
        let p = pool(10, 8);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let fresh: IpAddr = "10.0.0.3".parse().unwrap();
        let mut held: Vec<_> = (0..8).map(|_| p.admit(a).unwrap()).collect();
        assert!(p.admit(a).is_none(), "per-address cap");
        held.extend((0..2).map(|_| p.admit(b).unwrap()));
        assert_eq!(p.len(), 10);
        // Full: the fresh address takes the oldest place of the most
        // crowded one.
        let mine = p.admit(fresh).expect("a place for a fresh address");
        assert!(held[0].cancelled.is_cancelled());
        assert!(
            !held[8].cancelled.is_cancelled(),
            "b was not the most crowded"
        );
        assert_eq!(p.len(), 10);
        // The evicted connection leaving does not free a second place.
        held.remove(0);
        assert_eq!(p.len(), 10);
        drop(mine);
        assert_eq!(p.len(), 9);
        // An address as crowded as the most crowded one gets no eviction.
        let even = pool(2, 8);
        let _x = even.admit(a).unwrap();
        let _y = even.admit(b).unwrap();
        assert!(even.admit(b).is_none());
    }
}
