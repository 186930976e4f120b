// The baseline for holdfast-load's idle mode: a plain Node `ws` server that
// accepts WebSocket connections and holds them, doing nothing else. Holdfast
// does far more per connection (a session, heartbeats, a durable cursor), so
// this is the floor a user would compare against.
'use strict';
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(process.env.PORT || 8090),
  perMessageDeflate: false,
});
wss.on('connection', (ws) => {
  ws.on('message', () => {});
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`listening on ${wss.address().port}`));
