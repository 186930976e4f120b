//! `Op::AgentLogin`: register an agent's device and say how far its
//! commands are acked, so a reconnecting client knows what to resend.

use holdfast_protocol::agent::{AgentId, Seq};
use holdfast_protocol::ids::MsgId;

use super::Rules;
use crate::store::reads;
use crate::store::sql::args;
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    pub(in crate::store) fn agent_login(
        &mut self,
        agent: AgentId,
        device: &MsgId,
    ) -> Result<Seq, StoreError> {
        self.conn.execute(
            "INSERT INTO devices (agent_id, device_id, commands_acked, last_login_ms) VALUES (?1, ?2, 0, ?3) \
             ON CONFLICT(agent_id, device_id) DO UPDATE SET last_login_ms = excluded.last_login_ms",
            &args![agent, &device.0[..], now_ms()],
        )?;
        reads::device_commands_acked(self.conn, agent, device)
    }
}
