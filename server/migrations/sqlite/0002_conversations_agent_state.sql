CREATE INDEX conversations_agent_state ON conversations(assigned_agent, state);
