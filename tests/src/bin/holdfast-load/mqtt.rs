//! The chat workload over MQTT, for the side-by-side with Mosquitto.
//!
//! The same shape as `chat` mode: each visitor is one MQTT client publishing
//! QoS 1 to `hf/a/<agent>/<visitor>`, each agent one persistent-session
//! client subscribed QoS 1 to `hf/a/<agent>/+`, with the same rate, body
//! size and timestamp. With `--agent-rate`, agents publish back to
//! `hf/v/<visitor>`, which each visitor subscribes to. A publish counts as
//! acked at its PUBACK, and delivered when the subscriber decodes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::shard::Phase;
use crate::{Args, Flow, Sampler, now_ns, pin, report_flows, wait_listening};

#[derive(Debug, Default)]
struct Counters {
    v_sent: AtomicU64,
    v_acked: AtomicU64,
    a_sent: AtomicU64,
    a_acked: AtomicU64,
    errors: AtomicU64,
    v2a: std::sync::Mutex<Vec<u64>>,
    a2v: std::sync::Mutex<Vec<u64>>,
}

fn stamp(payload: &[u8], prefix: &str) -> Option<u64> {
    crate::stamp(std::str::from_utf8(payload).ok()?, prefix)
}

/// One MQTT client: connect (persistent session), subscribe if asked, then
/// publish to `topics` in turn at the phase's rate until Quit.
#[allow(clippy::too_many_arguments)]
async fn client(
    id: String,
    addr: SocketAddr,
    subscribe: Option<String>,
    topics: Vec<String>,
    outgoing: bool, // true for visitors (v2a), false for agents (a2v)
    size: usize,
    c: Arc<Counters>,
    mut phase: watch::Receiver<Phase>,
    ready: oneshot::Sender<anyhow::Result<()>>,
    gate: Arc<Semaphore>,
) {
    let permit = gate.acquire_owned().await;
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    let (cl, mut el) = AsyncClient::new(opts, 1000);
    // Holdfast's sockets are TCP_NODELAY; so are these, for a fair latency.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    // Wait for CONNACK (and SUBACK) before reporting ready.
    let want_sub = subscribe.is_some();
    if let Some(t) = &subscribe
        && let Err(e) = cl.subscribe(t.clone(), QoS::AtLeastOnce).await
    {
        let _ = ready.send(Err(e.into()));
        return;
    }
    let setup = async {
        let (mut conn, mut sub) = (false, !want_sub);
        while !(conn && sub) {
            match el.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => conn = true,
                Event::Incoming(Packet::SubAck(_)) => sub = true,
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(60), setup).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(anyhow::anyhow!("no CONNACK/SUBACK in 60 s")));
            return;
        }
    }
    drop(permit);
    let _ = ready.send(Ok(()));
    // The event loop: PUBACKs for our publishes, PUBLISHes from the other side.
    let c2 = c.clone();
    let poller = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    let n = if outgoing { &c2.v_acked } else { &c2.a_acked };
                    n.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (prefix, lat) = if outgoing {
                        ("a=", &c2.a2v)
                    } else {
                        ("t=", &c2.v2a)
                    };
                    if let Some(t) = stamp(&p.payload, prefix) {
                        let us = now_ns().saturating_sub(t) / 1000;
                        lat.lock().unwrap_or_else(|e| e.into_inner()).push(us);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    c2.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let pad = "x".repeat(size.saturating_sub(40));
    let prefix = if outgoing { "t=" } else { "a=" };
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut next: Option<Instant> = None;
    let mut period = Duration::from_secs(1);
    let mut k = 0usize;
    loop {
        tokio::select! {
            r = phase.changed() => {
                if r.is_err() { break; }
                let p = *phase.borrow_and_update();
                match p {
                    Phase::Quit => break,
                    Phase::Send { per_visitor } if per_visitor > 0.0 && !topics.is_empty() => {
                        period = Duration::from_secs_f64(1.0 / per_visitor);
                        next = Some(crate::shard::next_due(None, period, Instant::now()));
                    }
                    _ => next = None,
                }
            }
            () = tokio::time::sleep_until(next.unwrap_or(far).into()), if next.is_some() => {
                let now = Instant::now();
                next = Some(crate::shard::next_due(Some(next.unwrap_or(now)), period, now));
                let topic = topics[k % topics.len()].clone();
                k += 1;
                let body = format!("{prefix}{} {pad}", now_ns());
                if cl.publish(topic, QoS::AtLeastOnce, false, body.into_bytes()).await.is_ok() {
                    let n = if outgoing { &c.v_sent } else { &c.a_sent };
                    n.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    poller.abort();
}

pub async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let mut _guards: Vec<Box<dyn std::any::Any>> = Vec::new();
    let (addr, pid, name) = if args.spawn_mosquitto {
        let dir = tempfile::tempdir()?;
        let port = holdfast_tests::server::free_port();
        let conf = dir.path().join("mosquitto.conf");
        // Persistence on, as a user who wants reliable messaging would run
        // it. Mosquitto keeps messages in memory and writes its database on
        // `autosave_interval` and at shutdown; it never fsyncs per message.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 1000000\nmax_inflight_messages 0\nset_tcp_nodelay true\nuser root\nlog_dest stderr\nlog_type error\n",
                dir.path().display()
            ),
        )?;
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start mosquitto (apt install mosquitto): {e}"))?;
        let pid = child.id();
        _guards.push(Box::new(holdfast_tests::Reaper(child)));
        _guards.push(Box::new(dir));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr).await?;
        if let Some(cpus) = &args.pin_server {
            pin(pid, cpus)?;
        }
        let v = std::process::Command::new("mosquitto")
            .arg("-h")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        (addr, Some(pid), v)
    } else {
        (
            args.mqtt
                .ok_or_else(|| anyhow::anyhow!("--mqtt or --spawn-mosquitto"))?,
            args.server_pid.first().copied(),
            "mqtt broker".to_string(),
        )
    };
    let sampler = Sampler::start(&pid.into_iter().collect::<Vec<_>>());
    let c = Arc::new(Counters::default());
    let (agent_phase, _) = watch::channel(Phase::Hold);
    let (visitor_phase, _) = watch::channel(Phase::Hold);
    let gate = Arc::new(Semaphore::new(256));
    let agents = args.agents.max(1);
    let mut ready = Vec::new();
    for j in 0..agents {
        let (tx, rx) = oneshot::channel();
        let topics = (0..args.visitors)
            .filter(|i| i % agents == j)
            .map(|i| format!("hf/v/{i}"))
            .collect();
        tokio::spawn(client(
            format!("hf-agent-{j}"),
            addr,
            Some(format!("hf/a/{j}/+")),
            topics,
            false,
            args.size,
            c.clone(),
            agent_phase.subscribe(),
            tx,
            gate.clone(),
        ));
        ready.push(rx);
    }
    for r in ready.drain(..) {
        r.await??;
    }
    let t_connect = Instant::now();
    for i in 0..args.visitors {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(client(
            format!("hf-visitor-{i}"),
            addr,
            (args.agent_rate > 0.0).then(|| format!("hf/v/{i}")),
            vec![format!("hf/a/{}/{i}", i % agents)],
            true,
            args.size,
            c.clone(),
            visitor_phase.subscribe(),
            tx,
            gate.clone(),
        ));
        ready.push(rx);
    }
    for r in ready.drain(..) {
        r.await??;
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    sampler.reset();
    let c0 = sampler.ticks();
    let q0 = sampler.waits();
    let t0 = Instant::now();
    let _ = visitor_phase.send(Phase::Send {
        per_visitor: args.rate / args.visitors.max(1) as f64,
    });
    let _ = agent_phase.send(Phase::Send {
        per_visitor: args.agent_rate / agents as f64,
    });
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let _ = visitor_phase.send(Phase::Hold);
    let _ = agent_phase.send(Phase::Hold);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = Sampler::cpu_percent(c0, sampler.ticks(), elapsed);
    let (q_server, q_gen) = sampler.wait_percent(q0, elapsed);
    let peak = sampler.peak_kb();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = visitor_phase.send(Phase::Quit);
    let _ = agent_phase.send(Phase::Quit);
    let mut v2a = std::mem::take(&mut *c.v2a.lock().unwrap());
    let mut a2v = std::mem::take(&mut *c.a2v.lock().unwrap());
    v2a.sort_unstable();
    a2v.sort_unstable();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "holdfast-load mqtt: {name}: {} publishers, {} subscribers (QoS 1), {:.0} + {:.0} msg/s offered for {elapsed:.1} s (connect {connect_s:.1} s)",
        args.visitors, agents, args.rate, args.agent_rate
    );
    let (v2a_json, a2v_json) = report_flows(
        &Flow {
            sent: g(&c.v_sent),
            acked: g(&c.v_acked),
            lat: &v2a,
        },
        &Flow {
            sent: g(&c.a_sent),
            acked: g(&c.a_acked),
            lat: &a2v,
        },
        elapsed,
    );
    println!(
        "  errors {}  broker peak RSS {peak} KB  CPU {cpu:.0}%  waiting for a CPU {q_server:.0}% (generator {q_gen:.0}%)",
        g(&c.errors)
    );
    Ok(serde_json::json!({
        "mode": "chat", "target": name, "protocol": "mqtt qos1", "visitors": args.visitors, "agents": agents,
        "rate": args.rate, "agent_rate": args.agent_rate, "size": args.size,
        "duration_s": elapsed, "connect_s": connect_s,
        "v2a": v2a_json, "a2v": a2v_json,
        "errors": g(&c.errors),
        "server": { "peak_rss_kb": peak, "cpu_percent": cpu, "runq_wait_percent": q_server },
        "generator_runq_wait_percent": q_gen,
    }))
}
