//! One connection of the client core: connect, handshake, check the
//! server's key against the pin (asking the person on first use), log in,
//! then the live loop that moves bytes and time between the socket and the
//! session machine. Split from `core.rs` so the core's top level (states,
//! requests, status) reads on its own.

use super::*;

impl Core {
    // ------------------------------------------------------------ one connection

    pub(super) async fn session(&mut self) -> End {
        let end = match self.establish().await {
            Ok(link) => self.live(link).await,
            Err(end) => end,
        };
        // Keys and buffers of this connection go; everything unacked is
        // sent again after the next login.
        self.machine.disconnect();
        // The link is gone before the server confirmed: the grace period
        // takes over, and the app need not wait.
        if let Some(s) = self.signing_out.take() {
            let _ignored = s.reply.send(SignOutResult::Offline);
        }
        end
    }

    /// Write whatever the machine has queued. Writes are bounded by the
    /// dead-peer time too: a peer that stops reading fills our socket
    /// buffer, and an unbounded write would hang the task past any
    /// liveness check.
    pub(super) async fn write_out(&mut self, link: &mut Link) -> Result<(), String> {
        while let Some(bytes) = self.machine.poll_transmit(Instant::now()) {
            match tokio::time::timeout(link.io_timeout, link.stream.write_all(&bytes)).await {
                Err(_) => {
                    return Err(format!(
                        "the server took no data for {} ms",
                        link.io_timeout.as_millis()
                    ));
                }
                Ok(Err(e)) => return Err(format!("connection lost while sending: {e}")),
                Ok(Ok(())) => {}
            }
            // One batch per turn while live, so a long outbox replay
            // does not starve reading.
            if self.machine.is_live() {
                break;
            }
        }
        Ok(())
    }

    /// The machine's next event while connecting, reading as needed and
    /// serving requests meanwhile.
    pub(super) async fn next_event(&mut self, link: &mut Link) -> Result<ClientEvent, Wait> {
        let deadline = tokio::time::Instant::now() + link.io_timeout;
        loop {
            match self.machine.poll_event() {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => return Err(Wait::Session(e)),
            }
            let read = self
                .wait(tokio::time::timeout_at(
                    deadline,
                    link.stream.read(&mut link.buf),
                ))
                .await
                .map_err(Wait::End)?;
            match read {
                Err(_) => return Err(Wait::TimedOut),
                Ok(Err(e)) => return Err(Wait::Io(e)),
                Ok(Ok(0)) => return Err(Wait::Closed),
                Ok(Ok(n)) => self.machine.handle_bytes(Instant::now(), &link.buf[..n]),
            }
        }
    }

    /// Connect, handshake, check the pin and log in.
    pub(super) async fn establish(&mut self) -> Result<Link, End> {
        let server = self.cfg.server.clone();
        let io_timeout = self.cfg.liveness.dead_after;

        self.set_state(ConnState::Connecting);
        let stream = match self
            .wait(tokio::time::timeout(
                io_timeout,
                TcpStream::connect(server.clone()),
            ))
            .await?
        {
            Err(_) => return Err(retry(format!("timed out connecting to {server}"))),
            Ok(Err(e)) => return Err(retry(format!("cannot reach {server}: {e}"))),
            Ok(Ok(s)) => s,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let mut link = Link {
            stream,
            io_timeout,
            buf: vec![0; READ_CHUNK],
        };

        self.set_state(ConnState::Handshaking);
        self.machine.connect(Instant::now());
        self.write_out(&mut link)
            .await
            .map_err(|e| retry(format!("handshake with {server} failed: {e}")))?;
        let key = match self.next_event(&mut link).await {
            Ok(ClientEvent::ServerKey(key)) => key,
            Ok(_) => return Err(retry(format!("handshake with {server} failed"))),
            Err(Wait::End(end)) => return Err(end),
            Err(Wait::TimedOut) => {
                return Err(retry(format!("{server} did not answer the handshake")));
            }
            Err(Wait::Closed) => {
                return Err(retry(format!(
                    "{server} closed the connection during the handshake"
                )));
            }
            Err(Wait::Io(e)) => return Err(retry(format!("handshake with {server} failed: {e}"))),
            Err(Wait::Session(SessionError::Handshake(
                e @ HandshakeError::VersionMismatch { .. },
            ))) => {
                return Err(self.login_refused(ErrorCode::VersionMismatch, e.to_string()));
            }
            Err(Wait::Session(e)) => {
                return Err(retry(format!("handshake with {server} failed: {e}")));
            }
        };

        self.check_server_key(&server, &key).await?;

        self.set_state(ConnState::LoggingIn);
        let login = Login {
            username: self.cfg.username.clone(),
            password: self.cfg.password.as_str().to_owned(),
            device_id: self.store.device_id(),
            // The machine fills in its cursor.
            resume_after: None,
            ticket: self.ticket.as_ref().map(|t| t.to_vec()),
            client: format!(
                "holdfast-agent {} ({})",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS
            ),
        };
        if let Err(e) = self.machine.login(Instant::now(), login) {
            return Err(retry(format!("cannot seal the login: {e}")));
        }
        self.write_out(&mut link).await.map_err(retry)?;
        match self.next_event(&mut link).await {
            Ok(ClientEvent::LoggedIn(ok)) => {
                self.on_login_ok(ok)?;
                Ok(link)
            }
            Ok(ClientEvent::LoginRefused(e)) => Err(self.login_error(e)),
            Ok(ClientEvent::GoingAway { reason }) => {
                Err(retry(format!("the server is going away: {reason}")))
            }
            Ok(_) => Err(retry("protocol error: expected LoginOk")),
            Err(Wait::End(end)) => Err(end),
            Err(Wait::TimedOut) => Err(retry(format!("{server} did not answer the login"))),
            Err(Wait::Closed) => Err(retry(format!(
                "{server} closed the connection during login"
            ))),
            Err(Wait::Io(e)) => Err(retry(format!("connection lost during login: {e}"))),
            Err(Wait::Session(e)) => Err(retry(format!("protocol error: {e}"))),
        }
    }

    /// Pinning happens before anything sealed is sent: the first sealed
    /// frame carries the password.
    pub(super) async fn check_server_key(
        &mut self,
        server: &str,
        key: &[u8; 32],
    ) -> Result<(), End> {
        let stored = self
            .store
            .pinned_fingerprint(server)
            .map_err(|e| self.store_failed(e))?;
        let pinned = stored.or(self.cfg.expected_fingerprint);
        match check_pin(pinned.as_ref(), key) {
            PinCheck::Match => {
                if stored.is_none()
                    && let Some(fp) = pinned
                {
                    self.pin(&fp).map_err(|e| self.store_failed(e))?;
                }
                Ok(())
            }
            PinCheck::FirstUse(fingerprint) => {
                if self.cfg.trust_on_first_use {
                    tracing::info!(%fingerprint, %server, "pinning the server key on first use");
                    return self.pin(&fingerprint).map_err(|e| self.store_failed(e));
                }
                self.await_trust(server, fingerprint).await
            }
            PinCheck::Mismatch { pinned, presented } => {
                tracing::error!(%server, %pinned, %presented, "server key does not match the pin");
                self.emit(Update::FingerprintMismatch {
                    server: server.to_owned(),
                    pinned,
                    presented,
                });
                Err(End::Stop(StopReason::FingerprintMismatch {
                    pinned,
                    presented,
                }))
            }
        }
    }

    pub(super) async fn await_trust(
        &mut self,
        server: &str,
        fingerprint: Fingerprint,
    ) -> Result<(), End> {
        self.emit(Update::FingerprintUnknown {
            server: server.to_owned(),
            fingerprint,
        });
        self.set_state(ConnState::AwaitingTrust { fingerprint });
        loop {
            let Some(req) = self.requests.recv().await else {
                return Err(End::Shutdown(None));
            };
            match self.on_request(req) {
                Control::Continue => {}
                Control::Trust(true) => {
                    return self.pin(&fingerprint).map_err(|e| self.store_failed(e));
                }
                Control::Trust(false) => {
                    return Err(End::Stop(StopReason::FingerprintRefused { fingerprint }));
                }
                Control::Reconnect => return Err(End::RetryNow),
                Control::Shutdown(reply) => return Err(End::Shutdown(Some(reply))),
                Control::SignOut(reply) => {
                    let _ignored = reply.send(SignOutResult::Offline);
                }
            }
        }
    }

    pub(super) fn pin(&mut self, fp: &Fingerprint) -> Result<(), StoreError> {
        self.store.pin_fingerprint(&self.cfg.server, fp)
    }

    pub(super) fn login_error(&mut self, e: WireError) -> End {
        let retry_after = e
            .retry_after_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        match e.code {
            // The same Login would be refused the same way: too big for the
            // pre-login frame limit, or one the server cannot read. Retrying
            // would only loop; the person must change what they typed.
            ErrorCode::Unauthorized
            | ErrorCode::Disabled
            | ErrorCode::Revoked
            | ErrorCode::VersionMismatch
            | ErrorCode::TooLarge
            | ErrorCode::BadRequest => self.login_refused(e.code, e.message),
            code => {
                self.emit(Update::LoginFailed {
                    code,
                    message: e.message.clone(),
                    retry_after,
                });
                let reason = format!("login failed ({code}): {}", e.message);
                match code {
                    ErrorCode::Throttled | ErrorCode::RateLimited => End::Retry {
                        reason,
                        // Never exactly the server's wait: everyone it
                        // refused at once would come back at once.
                        after: Some(match retry_after {
                            Some(wait) => self.backoff.after_server_wait(wait),
                            None => self.backoff.next_delay(),
                        }),
                    },
                    _ => retry(reason),
                }
            }
        }
    }

    pub(super) fn login_refused(&mut self, code: ErrorCode, message: String) -> End {
        self.emit(Update::LoginFailed {
            code,
            message: message.clone(),
            retry_after: None,
        });
        End::Stop(StopReason::LoginRejected { code, message })
    }

    pub(super) fn on_login_ok(&mut self, ok: LoginOk) -> Result<(), End> {
        self.backoff.reset();
        self.ticket = (!ok.ticket.is_empty()).then(|| Zeroizing::new(ok.ticket.clone()));
        let session = Session {
            agent: ok.agent,
            display_name: ok.display_name.clone(),
            site: ok.site,
        };
        self.store
            .set_session(&session)
            .map_err(|e| self.store_failed(e))?;
        let acked = ok.commands_acked;
        if acked >= self.machine.next_seq() {
            // The server has committed seqs this store never numbered (it was
            // restored from an older copy). Renumber what is left after
            // them; the ids keep resends idempotent.
            tracing::warn!(
                acked,
                next = self.machine.next_seq(),
                "renumbering the outbox"
            );
            let entries = self
                .store
                .rebase_outbox(acked)
                .map_err(|e| self.store_failed(e))?;
            self.machine.restore_outbox(Outbox::restore(
                acked,
                entries.into_iter().map(|e| {
                    (
                        e.seq,
                        Pending {
                            id: e.id,
                            action: e.action,
                        },
                    )
                }),
            ));
        } else if acked > self.machine.acked()
            && let Some(end) = self.on_ack(acked, &[])
        {
            return Err(end);
        }
        self.emit(Update::LoggedIn {
            agent: ok.agent,
            display_name: ok.display_name,
            site: ok.site,
        });
        tracing::info!(server = %self.cfg.server, unsent = self.machine.unacked(), "logged in");
        self.set_state(ConnState::Live);
        // Uploads waiting for the link go on; one already in flight was
        // resent by the machine with the other unanswered queries.
        self.pump_uploads();
        Ok(())
    }

    pub(super) async fn live(&mut self, mut link: Link) -> End {
        loop {
            loop {
                let ev = match self.machine.poll_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => return retry(session_failure(e)),
                };
                if let Some(end) = self.on_client_event(ev) {
                    return end;
                }
            }
            // The server has not confirmed the sign-out in time: the app
            // goes on without it.
            if let Some(s) = self.signing_out.take_if(|s| Instant::now() >= s.deadline) {
                let _ignored = s.reply.send(SignOutResult::TimedOut);
            }
            if let Err(reason) = self.write_out(&mut link).await {
                return retry(reason);
            }
            let deadline = [
                self.machine.poll_timeout(),
                self.housekeeping_due(),
                self.signing_out.as_ref().map(|s| s.deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                read = link.stream.read(&mut link.buf) => match read {
                    Ok(0) => return retry("the server closed the connection"),
                    Err(e) => return retry(format!("connection lost: {e}")),
                    Ok(n) => self.machine.handle_bytes(Instant::now(), &link.buf[..n]),
                },
                req = self.requests.recv() => {
                    let Some(req) = req else { return End::Shutdown(None) };
                    match self.on_request(req) {
                        Control::Continue | Control::Trust(_) => {}
                        Control::Reconnect => return End::RetryNow,
                        Control::Shutdown(reply) => return End::Shutdown(Some(reply)),
                        Control::SignOut(reply) => {
                            // Sent by the machine once everything before it
                            // is acked, so the chats it hands back carry
                            // every reply the agent wrote.
                            if self.machine.sign_out().is_ok() {
                                self.signing_out = Some(SigningOut {
                                    reply,
                                    deadline: Instant::now() + SIGN_OUT_WAIT,
                                });
                            } else {
                                let _ignored = reply.send(SignOutResult::Offline);
                            }
                        }
                    }
                }
                () = sleep_until_opt(deadline) => {
                    if let Err(e) = self.machine.handle_timeout(Instant::now()) {
                        return retry(session_failure(e));
                    }
                    self.housekeeping();
                }
            }
        }
    }
}
