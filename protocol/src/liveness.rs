//! Heartbeats and dead-peer detection.
//!
//! TCP keepalive takes over two hours to notice a pulled cable, and a
//! blackholed link never errors at all, so each side sends a heartbeat after
//! `heartbeat` of quiet and declares the peer dead after `dead_after` without
//! hearing anything.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    pub heartbeat: Duration,
    pub dead_after: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(3),
            dead_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    /// Nothing due.
    Idle,
    /// Send a heartbeat now (then call [`Liveness::on_send`]).
    SendHeartbeat,
    /// Nothing heard for `dead_after`: close the connection.
    Dead,
}

#[derive(Debug, Clone)]
pub struct Liveness {
    cfg: LivenessConfig,
    last_recv: Instant,
    last_send: Instant,
}

impl Liveness {
    pub fn new(cfg: LivenessConfig, now: Instant) -> Self {
        Self {
            cfg,
            last_recv: now,
            last_send: now,
        }
    }

    pub fn config(&self) -> LivenessConfig {
        self.cfg
    }

    /// Any frame arrived (not only heartbeats).
    pub fn on_recv(&mut self, now: Instant) {
        self.last_recv = self.last_recv.max(now);
    }

    /// Any frame was sent.
    pub fn on_send(&mut self, now: Instant) {
        self.last_send = self.last_send.max(now);
    }

    pub fn poll(&self, now: Instant) -> LivenessAction {
        if now.saturating_duration_since(self.last_recv) >= self.cfg.dead_after {
            LivenessAction::Dead
        } else if now.saturating_duration_since(self.last_send) >= self.cfg.heartbeat {
            LivenessAction::SendHeartbeat
        } else {
            LivenessAction::Idle
        }
    }

    /// The next instant at which [`Liveness::poll`] changes its answer.
    pub fn poll_timeout(&self) -> Instant {
        (self.last_send + self.cfg.heartbeat).min(self.last_recv + self.cfg.dead_after)
    }

    /// When the peer counts as dead if nothing arrives before.
    pub fn dead_at(&self) -> Instant {
        self.last_recv + self.cfg.dead_after
    }

    /// How long the peer has been silent.
    pub fn silence(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_then_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new(LivenessConfig::default(), t0);
        assert_eq!(
            l.poll(t0 + Duration::from_millis(2999)),
            LivenessAction::Idle
        );
        assert_eq!(
            l.poll(t0 + Duration::from_secs(3)),
            LivenessAction::SendHeartbeat
        );
        l.on_send(t0 + Duration::from_secs(3));
        assert_eq!(l.poll_timeout(), t0 + Duration::from_secs(6));
        l.on_recv(t0 + Duration::from_secs(5));
        assert_eq!(
            l.poll(t0 + Duration::from_secs(14)),
            LivenessAction::SendHeartbeat
        );
        assert_eq!(l.poll(t0 + Duration::from_secs(15)), LivenessAction::Dead);
    }
}
