//! Agents: `holdfast-chaos-agent` processes on stores that outlive them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Timings;
use super::book::{SharedBook, lock};
use crate::proxy::Proxy;
use crate::server::PASSWORD;
/// One agent: a `holdfast-chaos-agent` process on a store that outlives it.
pub(crate) struct AgentProc {
    pub(crate) idx: usize,
    pub(crate) user: String,
    pub(crate) store: PathBuf,
    pub(crate) proxy: Proxy,
    pub(crate) bin: PathBuf,
    pub(crate) timings: Timings,
    pub(crate) child: Option<tokio::process::Child>,
    pub(crate) stdin: Option<tokio::process::ChildStdin>,
    pub(crate) visitors: Vec<usize>,
    pub(crate) next: usize,
}

impl AgentProc {
    pub(crate) fn spawn(&mut self, book: &SharedBook) {
        let t = self.timings;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--server")
            .arg(self.proxy.addr.to_string())
            .arg("--user")
            .arg(&self.user)
            .arg("--store")
            .arg(&self.store)
            .arg("--heartbeat-ms")
            .arg(t.heartbeat.as_millis().to_string())
            .arg("--dead-after-ms")
            .arg(t.dead_after.as_millis().to_string())
            .arg("--backoff-base-ms")
            .arg(t.backoff_base.as_millis().to_string())
            .arg("--backoff-cap-ms")
            .arg(t.backoff_cap.as_millis().to_string())
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // HOLDFAST_CHAOS_AGENT_LOGS=DIR keeps each agent's own log (why it
        // backed off, what the server refused) in DIR/agentK.log, appended
        // across restarts, for finding out why a link came back late.
        let log = std::env::var_os("HOLDFAST_CHAOS_AGENT_LOGS").and_then(|d| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&d).join(format!("agent{}.log", self.idx)))
                .ok()
        });
        match log {
            Some(f) => {
                cmd.env("HOLDFAST_LOG", "info").stderr(Stdio::from(f));
            }
            None => {
                cmd.env("HOLDFAST_LOG", "error").stderr(Stdio::null());
            }
        }
        let mut child = cmd.spawn().expect("spawn holdfast-chaos-agent");
        self.stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("agent stdout");
        lock(book).agent_state.insert(self.idx, "starting".into());
        tokio::spawn(read_agent(self.idx, stdout, book.clone()));
        self.child = Some(child);
    }

    pub(crate) async fn write(&mut self, line: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        stdin.write_all(line.as_bytes()).await.is_ok() && stdin.write_all(b"\n").await.is_ok()
    }

    /// SIGKILL, no goodbye.
    pub(crate) async fn kill9(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Graceful stop; SIGKILL after 10 s.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.write("shutdown").await;
        self.stdin = None;
        if let Some(mut c) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
        {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

pub(crate) async fn read_agent(idx: usize, stdout: tokio::process::ChildStdout, book: SharedBook) {
    let mut lines = BufReader::new(stdout).lines();
    let link = format!("a{idx}");
    while let Ok(Some(line)) = lines.next_line().await {
        let mut p = line.splitn(2, ' ');
        let (kind, rest) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
        let mut b = lock(&book);
        match kind {
            "ok" => {
                let mut q = rest.split(' ');
                let body = q.next().unwrap_or("");
                if let (Some(id), Some(v)) = (
                    q.next(),
                    body.strip_prefix("invite:v")
                        .and_then(|v| v.parse::<usize>().ok()),
                ) {
                    b.invite_ids.insert(id.to_string(), v);
                } else {
                    b.acked(body);
                }
            }
            "done" => {
                let mut q = rest.split(' ');
                if let (Some(id), Some(conv)) = (q.next(), q.next())
                    && let Some(v) = b.invite_ids.get(id).copied()
                    && let Ok(conv) = conv.parse::<u64>()
                {
                    b.conv_of.insert(v, conv);
                }
            }
            "rejected" => b.agent_rejects += 1,
            "msg" => {
                let mut q = rest.splitn(3, ' ');
                let (conv, msg_id, body) = (q.next(), q.next(), q.next());
                let (Some(conv), Some(msg_id), Some(body)) = (conv, msg_id, body) else {
                    continue;
                };
                let conv: u64 = conv.parse().unwrap_or(0);
                let msg_id: u64 = msg_id.parse().unwrap_or(0);
                let v = b.conv_of.iter().find(|(_, c)| **c == conv).map(|(v, _)| *v);
                let receiver = match v {
                    Some(v) => format!("a{idx}<v{v}"),
                    None => format!("a{idx}<c{conv}"),
                };
                *b.shown.entry(body.to_string()).or_insert(0) += 1;
                b.applied(&receiver, body, msg_id);
            }
            "state" => {
                let prev = b.agent_state.insert(idx, rest.to_string());
                if rest == "live" && prev.as_deref() != Some("live") {
                    *b.connections.entry(link.clone()).or_insert(0) += 1;
                }
                if prev.as_deref() == Some("live") && rest != "live" {
                    b.agent_disconnects += 1;
                    b.went_down.insert(link.clone(), std::time::Instant::now());
                    b.link_dead(&link, true);
                }
            }
            _ => {}
        }
    }
}

/// Send the next message of agent `a` to one of its visitors.
pub(crate) async fn send_from_agent(book: &SharedBook, a: &mut AgentProc) -> bool {
    if a.visitors.is_empty() || a.stdin.is_none() {
        return false;
    }
    let v = a.visitors[a.next % a.visitors.len()];
    let conv = match lock(book).conv_of.get(&v) {
        Some(c) => *c,
        None => return false,
    };
    let stream = format!("a{}>v{v}", a.idx);
    let body = format!("{stream}#{}", a.next);
    a.next += 1;
    {
        let mut b = lock(book);
        b.sent(&stream, &format!("v{v}"), &body);
        b.from_agents += 1;
    }
    a.write(&format!("send {conv} {body}")).await
}
