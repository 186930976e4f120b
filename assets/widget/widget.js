/*! Holdfast visitor widget | plain ES5, no dependencies | see "The visitor widget" in README.md */
(function (win, doc) {
  'use strict';

  var prior = win.Holdfast;
  if (prior && prior.version) return; // loaded twice: keep the first

  // ------------------------------------------------------------ options

  function findScript() {
    if (doc.currentScript) return doc.currentScript;
    var all = doc.getElementsByTagName('script');
    for (var i = all.length - 1; i >= 0; i--) {
      if (all[i].getAttribute('data-site') && /widget(\.min)?\.js([?#]|$)/.test(all[i].src)) return all[i];
    }
    return null;
  }
  var tag = findScript();
  function opt(name) {
    return tag ? tag.getAttribute('data-' + name) : null;
  }
  var SITE = opt('site');
  if (!SITE) {
    if (win.console) console.error('Holdfast: the script tag needs data-site="SITE_KEY"');
    return;
  }
  // The server is wherever this script came from, unless data-server says.
  var BASE = opt('server');
  if (!BASE) {
    var src = /^(https?:\/\/[^\/?#]+)([^?#]*)/i.exec(tag.src) || ['', '', ''];
    BASE = src[1] + src[2].replace(/\/(widget\/)?widget(\.min)?\.js$/, '');
  }
  BASE = BASE.replace(/\/+$/, '');
  var WS_URL = BASE.replace(/^http/i, 'ws') + '/v1/visitor/ws';
  var nav = win.navigator || {};
  var LANG = opt('lang') || nav.language || nav.userLanguage || 'en';
  var ZH = /^zh/i.test(LANG);
  // auto (default), websocket or longpoll
  var MODE = (opt('transport') || 'auto').toLowerCase();
  var useLP = MODE === 'longpoll' || typeof win.WebSocket === 'undefined';
  // The site group (department) this page's chat is for (PROTOCOL.md
  // 10.23): data-group, else the visitor's own choice (kept per site).
  var GROUP = (opt('group') || '').replace(/^\s+|\s+$/g, '').toLowerCase().slice(0, 64);

  var STR = ZH ? {
    invReply: '回复', invClose: '关闭邀请', open: '打开聊天', close: '关闭聊天', title: '在线客服', sub: '我们通常几分钟内回复',
    queued: '正在为您接入客服…', active: '为您服务：', closed: '本次对话已结束',
    label: '消息', ph: '输入消息…', send: '发送', offline: '离线 — 恢复连接后发送',
    connecting: '正在连接…', sending: '发送中…', failed: '发送失败：', you: '您',
    leaveT: '当前没有客服在线', leaveP: '请留言，我们会尽快回复您。', email: '电子邮件（可选）',
    leave: '留言', thanks: '谢谢！我们已收到您的留言。', tooLong: '消息太长了', log: '聊天记录',
    end: '结束对话', endL: '结束本次对话', endQ: '要结束本次对话吗？', yes: '结束', no: '继续聊天',
    joined: '{agent} 加入了对话', handed: '{by} 将对话转给了 {to}', moved: '{by} 将对话从 {from} 转给了 {to}',
    assigned: '{by} 将对话分配给了 {to}', closed_by_agent: '{agent} 结束了对话', closed_by_visitor: '您结束了对话',
    requeued: '{agent} 已离开 — 您已回到队列中，下一位有空的客服会回复您',
    attach: '添加文件', drop: '松开即可发送文件', cancel: '取消', dismiss: '关闭', download: '下载',
    cancelOf: '取消上传 {name}', dismissOf: '关闭 {name} 的提示', opener: '发送文件：{name}',
    empty: '空文件无法发送', tooBig: '文件太大（{size}），上限为 {max}', badType: '不支持这种类型的文件',
    chat: '正在开始对话…', waitNet: '等待网络…', unavailable: '文件暂不可用',
    interrupted: '{name} 的上传因页面重新加载而中断。请重新添加该文件以发送。',
    typing: '{agent} 正在输入…', someone: '客服',
    line: '您排在第 {n} 位', about: '，预计等待约 {t}', soon: '，预计不到 1 分钟', min: '{m} 分钟', mins: '{m} 分钟',
    pickT: '您想咨询哪个部门？', pickAway: '（现在无人在线，可留言）'
  } : {
    invReply: 'Reply', invClose: 'Close the invitation',
    open: 'Open chat', close: 'Close chat', title: 'Chat with us', sub: 'We usually reply in a few minutes',
    queued: 'Finding someone to help you…', active: 'You are chatting with ', closed: 'This chat has ended',
    label: 'Message', ph: 'Type your message…', send: 'Send', offline: 'Offline — will send when back',
    connecting: 'Connecting…', sending: 'Sending…', failed: 'Not sent: ', you: 'You',
    leaveT: 'No one is online right now', leaveP: 'Leave a message and we will get back to you.',
    email: 'Email (optional)', leave: 'Leave message', thanks: 'Thanks! We got your message.',
    tooLong: 'That message is too long', log: 'Messages',
    end: 'End chat', endL: 'End this chat', endQ: 'End this chat?', yes: 'End it', no: 'Keep chatting',
    joined: '{agent} joined the chat', handed: '{by} transferred the chat to {to}',
    moved: '{by} moved the chat from {from} to {to}', assigned: '{by} assigned the chat to {to}',
    closed_by_agent: '{agent} ended the chat', closed_by_visitor: 'You ended the chat',
    requeued: '{agent} had to leave — you are back in the queue; the next available agent will reply',
    attach: 'Attach a file', drop: 'Drop a file here to send it', cancel: 'Cancel', dismiss: 'Dismiss',
    download: 'Download', cancelOf: 'Cancel the upload of {name}', dismissOf: 'Dismiss the note about {name}',
    opener: 'Sending a file: {name}', empty: 'An empty file cannot be sent',
    tooBig: 'This file is too large ({size}); the limit is {max}', badType: 'This type of file cannot be sent',
    chat: 'Starting the chat…', waitNet: 'Waiting for the network…', unavailable: 'This file is not available',
    interrupted: 'The upload of {name} was interrupted by reloading the page. Attach it again to send it.',
    typing: '{agent} is typing…', someone: 'The agent',
    line: 'You are number {n} in line', about: ', about {t}', soon: ', less than a minute',
    min: '{m} minute', mins: '{m} minutes',
    pickT: 'Who would you like to talk to?', pickAway: ' (no one there now: leave a message)'
  };

  // The notice kinds a visitor can see, with their own line in STR.
  var SYS = { joined: 1, handed: 1, moved: 1, assigned: 1, closed_by_agent: 1, closed_by_visitor: 1, requeued: 1 };

  // ------------------------------------------------------------ helpers

  function now() {
    return new Date().getTime();
  }
  function each(a, f) {
    for (var i = 0; i < a.length; i++) f(a[i], i);
  }
  function listen(t, ev, f) {
    if (t && t.addEventListener) t.addEventListener(ev, f, false);
  }
  function utf8len(s) {
    return unescape(encodeURIComponent(s)).length;
  }
  // Lone surrogates cannot be encoded as UTF-8: replace them.
  function whole(s) {
    var o = '', i, c, d;
    for (i = 0; i < s.length; i++) {
      c = s.charCodeAt(i);
      d = s.charCodeAt(i + 1);
      if (c >= 0xd800 && c < 0xdc00 && d >= 0xdc00 && d < 0xe000) o += s.charAt(i) + s.charAt(++i);
      else o += c >= 0xd800 && c < 0xe000 ? '\ufffd' : s.charAt(i);
    }
    return o;
  }
  // Control characters (except tab, CR, LF) are refused by the server;
  // lengths are limited in UTF-8 bytes.
  function clean(s, max) {
    s = whole(String(s == null ? '' : s).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g, ''));
    while (max && utf8len(s) > max) s = whole(s.slice(0, Math.floor(s.length * 0.9)));
    return s;
  }
  function rand(n) {
    var c = win.crypto || win.msCrypto, a, i;
    if (c && c.getRandomValues && win.Uint8Array) {
      a = new Uint8Array(n);
      c.getRandomValues(a);
      return a;
    }
    for (a = [], i = 0; i < n; i++) a.push(Math.floor(Math.random() * 256));
    return a;
  }
  // UUIDv7: 48-bit millisecond time, version 7, variant 10, random rest.
  function uuid7() {
    var b = rand(16), t = now(), hi = Math.floor(t / 4294967296), lo = t % 4294967296, s = '', i, h;
    var head = [hi >>> 8 & 255, hi & 255, lo >>> 24 & 255, lo >>> 16 & 255, lo >>> 8 & 255, lo & 255];
    for (i = 0; i < 16; i++) {
      h = i < 6 ? head[i] : i === 6 ? 0x70 | b[i] & 15 : i === 8 ? 0x80 | b[i] & 63 : b[i];
      s += (h < 16 ? '0' : '') + h.toString(16) + (i === 3 || i === 5 || i === 7 || i === 9 ? '-' : '');
    }
    return s;
  }
  function parse(s) {
    try {
      return JSON.parse(s);
    } catch (e) {
      return null;
    }
  }

  // ------------------------------------------------------------ storage
  // Everything is namespaced per site key. Without localStorage (privacy
  // modes) the widget still works, it just forgets on reload.

  var NS = 'holdfast:' + SITE + ':', mem = {}, LS = null, SS = null;
  try {
    LS = win.localStorage;
    LS.setItem(NS + 'probe', '1');
    LS.removeItem(NS + 'probe');
  } catch (e) {
    LS = null;
  }
  try {
    SS = win.sessionStorage;
  } catch (e) {
    SS = null;
  }
  function sget(k) {
    try {
      if (LS) return LS.getItem(NS + k);
    } catch (e) { /* fall through */ }
    return mem.hasOwnProperty(k) ? mem[k] : null;
  }
  function sset(k, v) {
    mem[k] = v;
    try {
      if (LS) {
        if (v == null) LS.removeItem(NS + k);
        else LS.setItem(NS + k, v);
      }
    } catch (e) { /* quota: memory copy still holds it */ }
  }
  function jget(k, d) {
    var v = parse(sget(k));
    return v == null ? d : v;
  }
  function jset(k, v) {
    sset(k, v == null ? null : JSON.stringify(v));
  }

  // ------------------------------------------------------------ state

  // The identity proof from Holdfast.identify ({id, hash}), kept with the
  // token: a token bound to a verified identity resumes only with its
  // proof, and the widget connects before the page identifies again.
  function proofOf(p) {
    return p && typeof p === 'object' && typeof p.id === 'string' && p.id ?
      { id: p.id, hash: typeof p.hash === 'string' ? p.hash : null } : null;
  }
  // reset() and a change of user give this browser's chat a new epoch, in
  // every tab: a tab still holding the old chat in memory then takes the
  // new state instead of writing the old one back.
  var EPOCH = sget('epoch');

  var TAB = uuid7();
  var S = {
    token: sget('token'),
    proof: proofOf(jget('identity', null)),
    visitor: null,
    cursor: 0, // last event seq applied (and stored) by any tab
    conv: null, // ConversationView
    convSeq: 0,
    msgs: {}, // by client id
    agents: true,
    online: false, // transport welcomed
    open: false,
    fatal: null,
    idn: null // last identify payload
  };
  var listeners = { message: [] };

  function logFromStorage() {
    var l = jget('log', null);
    return l && typeof l === 'object' ? l : null;
  }
  function mergeLog(l) {
    if (!l || (l.epoch || null) !== EPOCH || (S.visitor && l.visitor && l.visitor !== S.visitor)) return false;
    var changed = false;
    if (!S.visitor) S.visitor = l.visitor || null;
    if (l.cursor > S.cursor) S.cursor = l.cursor;
    if (l.convSeq > S.convSeq) {
      S.convSeq = l.convSeq;
      S.conv = l.conv || null;
      changed = true;
    }
    each(l.msgs || [], function (m) {
      var mine = S.msgs[m.id];
      if (!mine || (mine.message == null && (m.message != null || m.failed))) {
        S.msgs[m.id] = m;
        changed = true;
      }
    });
    return changed;
  }
  // The cursor and the messages it covers are written in one setItem, so
  // they can never disagree. Merge first: another tab may have gone further.
  function saveLog(force) {
    if (!current()) return;
    if (!force) mergeLog(logFromStorage());
    var list = [], k;
    for (k in S.msgs) {
      if (S.msgs.hasOwnProperty(k) && (S.msgs[k].message != null || S.msgs[k].failed)) list.push(S.msgs[k]);
    }
    list.sort(order);
    if (list.length > 200) list = list.slice(list.length - 200);
    jset('log', { epoch: EPOCH, visitor: S.visitor, cursor: S.cursor, conv: S.conv, convSeq: S.convSeq, msgs: list });
  }
  function resetLog() {
    S.cursor = 0;
    S.conv = null;
    S.convSeq = 0;
    for (var k in S.msgs) {
      if (S.msgs.hasOwnProperty(k) && S.msgs[k].message != null) {
        delete S.msgs[k];
        unplace(k);
      }
    }
  }

  // The outbox is always read fresh: other tabs change it too.
  function outbox() {
    var o = jget('outbox', []);
    return o && o.length ? o : [];
  }
  function unqueue(id) {
    if (!current()) return;
    var o = outbox(), n = [];
    each(o, function (e) {
      if (e.id !== id) n.push(e);
    });
    if (n.length !== o.length) jset('outbox', n.length ? n : null);
  }

  // One tab at a time sends from the shared outbox: the holder of a lease
  // in localStorage, renewed while it is connected. The server dedupes by
  // id as well, so a rare overlap at handover cannot create a duplicate.
  function leader() {
    if (!current()) return false;
    var l = jget('lock', null), t = now();
    if (!l || l.tab === TAB || l.exp < t) {
      jset('lock', { tab: TAB, exp: t + 5000 });
      return true;
    }
    return false;
  }
  function unlock() {
    var l = jget('lock', null);
    if (l && l.tab === TAB) sset('lock', null);
  }

  // ------------------------------------------------------------ messages

  function key(m) {
    return m.message != null ? [0, m.message] : [1, m.at || m.at_ms || 0];
  }
  function order(a, b) {
    var x = key(a), y = key(b);
    return x[0] - y[0] || x[1] - y[1];
  }
  function emit(m) {
    each(listeners.message, function (f) {
      try {
        f({ id: m.id, conversation: m.conversation, message: m.message, from: m.from, name: m.name, body: m.body, at_ms: m.at_ms, notice: m.notice, attachment: m.attachment || null });
      } catch (e) {
        if (win.console) console.error(e);
      }
    });
  }
  // A server message (from an event, a snapshot or an ack).
  function addMsg(m, live) {
    var old = S.msgs[m.id];
    S.msgs[m.id] = {
      id: m.id, conversation: m.conversation, message: m.message, from: m.from || (old && old.from) || 'visitor',
      name: m.name || null, body: m.body != null ? m.body : old && old.body, at_ms: m.at_ms,
      notice: m.notice || (old && old.notice) || null,
      // Only the file's description is kept (and stored): its links expire.
      attachment: fileMeta(m.attachment) || (old && old.attachment) || null
    };
    place(S.msgs[m.id]);
    if (live && (!old || old.message == null)) {
      emit(S.msgs[m.id]);
      // An agent writing to a visitor whose widget is closed: an invitation.
      if (m.from === 'agent' && !S.open) api.open(true);
    }
  }
  function pending(e) {
    // Ending a chat is an action, not a bubble: its system line shows it.
    if (e.t === 'end_chat' || (S.msgs[e.id] && (S.msgs[e.id].message != null || S.msgs[e.id].failed))) return;
    S.msgs[e.id] = { id: e.id, from: 'visitor', body: e.body, at: e.at, pending: true, t: e.t, attachment: fileMeta(e.file) };
    place(S.msgs[e.id]);
  }

  // ------------------------------------------------------------ transport

  var T = null; // the live transport: {kind, send(msg), close()}
  var gen = 0; // bumps whenever a transport ends; stale callbacks check it
  var connSeq = 0; // last seq received on this connection (gap check)
  var attempt = 0, retryTimer = null, wsFails = 0, everOnline = false;
  // The backoff starts over only once a link has been useful: the server
  // answered something sent after its welcome (a pong on WebSocket, which
  // it sends only after the replay or snapshot, so that went through every
  // proxy in the way; a poll on long-poll) and the link has been up for
  // USEFUL_MS. A server or proxy that closes each link right after the
  // welcome then gets slower and slower reconnects, not a storm.
  var USEFUL_MS = 3000;
  // In `auto` mode, this many WebSockets in a row that were welcomed but
  // never became useful mean WebSocket does not work from here: long-poll
  // takes over, and WebSocket is tried again after WS_RETRY_MS (doubling,
  // up to 10 minutes), once, while long-poll keeps working.
  var SHORT_LINKS = 3, WS_RETRY_MS = 30000;
  var shortLinks = 0, probing = false, wsRetryAt = 0, wsRetryMs = WS_RETRY_MS;
  // Stop-and-wait: only the outbox's oldest entry is ever on the wire, so
  // a rate limit or a lost connection cannot get a later message stored
  // before an earlier one. `flying` is [id, gen] of that entry.
  var flying = null, holdUntil = 0;
  var helloAfter = 0, ackTimer = null, unacked = 0, flushTimer = null;
  // Page views the server has not heard of, oldest first: the landing page,
  // then each navigation, even those before the first welcome. A hello
  // carries the first; `page` messages the rest.
  var here = win.location.href, views = [{ url: here, title: doc.title, referrer: doc.referrer }], helloView = null;

  function pageInfo(v) {
    return {
      url: clean(v.url, 2048),
      // The landing page's title may not be parsed yet when the script starts.
      title: clean((v.url === win.location.href ? doc.title : v.title) || '', 512),
      referrer: clean(v.referrer || '', 2048) || null
    };
  }
  function hello() {
    // A reconnect on the same page is not a new page view.
    helloView = views[0] || null;
    var page = helloView ? pageInfo(helloView) : null;
    // Another tab may have been welcomed since this one lost its token.
    if (!S.token) S.token = sget('token');
    helloAfter = S.token ? S.cursor : 0;
    return {
      t: 'hello', site: SITE, token: S.token || null, after: S.token ? helloAfter : null, page: page,
      user_agent: clean(nav.userAgent || '', 500) || null, lang: clean(LANG, 35), v: 1,
      identity: S.proof ? { id: S.proof.id, hash: S.proof.hash } : null,
      group: groupKey()
    };
  }
  // The group the chat is for: the page's, else the visitor's choice.
  function groupKey() {
    return GROUP || sget('group') || null;
  }
  // The visitor chose a group: a new hello carries it, so the server opens
  // the chat for it and says whether anyone of it is there.
  function choose(key) {
    sset('group', key);
    S.groups = null;
    setState();
    if (T) {
      var t = T;
      // A link closed on purpose says nothing about the network or a proxy.
      t.useful = true;
      lost(false);
      t.close();
    }
    clearTimeout(retryTimer);
    connect();
  }
  function send(m) {
    if (T && S.online) T.send(m);
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (T || S.fatal || !current()) return;
    if (nav.onLine === false) {
      // Certainly offline: wait for the `online` event (or a slow retry in
      // case the browser is wrong).
      setState();
      retryTimer = setTimeout(connect, 10000);
      return;
    }
    if (useLP) lpStart();
    else wsStart();
  }
  function lost(beforeWelcome) {
    if (S.fatal) return;
    var t = T;
    gen++;
    T = null;
    S.online = false;
    clearTimeout(ackTimer);
    ackTimer = null;
    unlock();
    if (MODE === 'auto') {
      if (beforeWelcome) {
        // WebSocket failing twice while the browser is online: a proxy may
        // be blocking it; try long-poll. If long-poll fails too, go back.
        if (!useLP && nav.onLine !== false && (++wsFails >= 2 || probing)) toLongPoll();
        else if (useLP && typeof win.WebSocket !== 'undefined' && wsFails >= 2) {
          useLP = false;
          wsFails = shortLinks = 0;
        }
      } else if (t && t.kind === 'ws' && !t.useful && nav.onLine !== false &&
        (++shortLinks >= SHORT_LINKS || probing)) {
        // Welcomed, then gone before it was of any use, again and again,
        // while the browser is online: a proxy that cannot carry what
        // follows the welcome.
        toLongPoll();
      }
    }
    setState();
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, backoff());
  }
  // Full jitter: uniform in [0, min(10 s, 250 ms * 2^n)].
  function backoff() {
    return Math.random() * Math.min(10000, 250 * Math.pow(2, attempt++));
  }
  function toLongPoll() {
    useLP = true;
    probing = false;
    wsFails = 2; // so that long-poll failing as well goes back to WebSocket
    shortLinks = 0;
    wsRetryAt = now() + wsRetryMs;
    wsRetryMs = Math.min(wsRetryMs * 2, 600000);
  }
  // See USEFUL_MS.
  function useful(t) {
    if (t !== T || !t.proof || t.useful || now() - t.upAt < USEFUL_MS) return;
    t.useful = true;
    attempt = 0;
    shortLinks = 0;
    if (t.kind === 'ws') {
      probing = false;
      wsRetryAt = 0;
      wsRetryMs = WS_RETRY_MS;
    }
  }
  function drop() {
    if (T) {
      var t = T;
      lost(!S.online);
      t.close();
    }
  }

  function onMsg(m) {
    // Nothing of a link from before another tab's reset() gets through.
    if (!m || typeof m !== 'object' || !current()) return;
    switch (m.t) {
      case 'welcome':
        if (S.visitor && S.visitor !== m.visitor) resetLog();
        // WebSocket: a replay after `after` or a snapshot follows. Long-poll:
        // the first poll brings either.
        connSeq = T && T.kind === 'lp' ? S.cursor : m.resumed ? helloAfter : -1;
        S.visitor = m.visitor;
        // Every welcome renews the token (tokens expire): keep the newest.
        S.token = m.token;
        sset('token', m.token);
        S.agents = !!m.agents_online;
        // A chosen group the site no longer has is forgotten: the visitor
        // may choose again.
        if (!GROUP && sget('group') && !m.group) sset('group', '');
        S.groups = m.groups && m.groups.length ? m.groups : null;
        drawGroups();
        if (m.attach && typeof m.attach === 'object') limits = m.attach;
        // Only a server that says so gets drafts (PROTOCOL.md 10.18).
        peek = m.sneak_peek === true;
        typed.sent = false;
        S.online = everOnline = true;
        wsFails = 0;
        var w = T;
        if (w) {
          w.hb = Math.max(m.heartbeat_ms || 3000, 100);
          w.upAt = now();
          setTimeout(function () {
            useful(w);
          }, USEFUL_MS + 10);
        }
        if (helloView && views[0] === helloView) views.shift();
        helloView = null;
        if (S.idn) send(S.idn);
        report();
        setState();
        flush();
        // Its pong follows the replay or snapshot: the proof of a useful link.
        if (w && w.kind === 'ws') send({ t: 'ping' });
        break;
      case 'event':
        if (connSeq >= 0 && m.seq <= connSeq) return ackSoon(true); // duplicate
        if (connSeq >= 0 && m.seq > connSeq + 1) return drop(); // gap: resume from the cursor
        connSeq = m.seq;
        apply(m.event, m.seq);
        if (m.seq > S.cursor) S.cursor = m.seq;
        saveLog();
        ackSoon(false);
        break;
      case 'snapshot':
        resetLog();
        each(m.messages || [], function (x) {
          addMsg(x, false);
          unqueue(x.id);
        });
        S.conv = m.conversation || null;
        S.convSeq = S.cursor = connSeq = m.seq;
        saveLog(true);
        ackSoon(true);
        setState();
        break;
      case 'ack':
        var p = S.msgs[m.id];
        // An end_chat's ack names its system line, which comes as an event.
        if (p && p.message == null) addMsg({ id: m.id, conversation: m.conversation, message: m.message, from: 'visitor', body: p.body, at_ms: m.at_ms }, false);
        saveLog();
        done(m.id);
        break;
      case 'agents':
        S.agents = !!m.online;
        // A choice still on screen follows its groups' agents (10.23).
        if (m.groups && m.groups.length) {
          S.groups = m.groups;
          drawGroups();
        }
        setState();
        break;
      case 'queue':
        // A signal beside the log (PROTOCOL.md 10.14): shown while the
        // chat waits, never stored.
        S.queue = { n: m.position, ms: m.wait_ms == null ? null : m.wait_ms };
        setState();
        break;
      case 'invite':
        // An automatic invitation (PROTOCOL.md 10.20): a signal, shown
        // once, and never over a chat that is already going.
        if (!chatting() && ui.top && typeof m.id === 'number') showInvite(m.id, clean(String(m.text || ''), 500));
        break;
      case 'typing':
        // A signal (PROTOCOL.md 10.18): shown until a stop, the agent's
        // next message, or AGENT_TYPING_MS without a refresh.
        clearTimeout(agentTypingTimer);
        agentTyping = m.typing ? clean(m.name || '', 100) || STR.someone : null;
        if (agentTyping) agentTypingTimer = setTimeout(function () {
          agentTyping = null;
          showTyping();
        }, AGENT_TYPING_MS);
        showTyping();
        break;
      case 'error':
        onError(m);
        break;
      case 'going_away':
        drop();
        break;
      case 'pong':
        if (T) {
          T.proof = true;
          useful(T);
        }
        break;
      default: // anything newer
    }
  }
  var RETRY = { throttled: 1, rate_limited: 1, unavailable: 1, going_away: 1 };
  // Answering a hello, these mean this page will never get a chat.
  var FATAL = { not_found: 1, forbidden: 1, version_mismatch: 1 };
  function onError(m) {
    if (m.id) {
      if (RETRY[m.code]) {
        // Send the head again once the server says it may, and nothing
        // else before it: the server refuses the rest until then anyway.
        flying = null;
        var wait = m.retry_after_ms > 0 ? m.retry_after_ms + 10 + Math.random() * 40 : 1000 + Math.random() * 1000;
        holdUntil = now() + wait;
        clearTimeout(flushTimer);
        flushTimer = setTimeout(flush, wait);
        return;
      }
      // Not retryable: drop it from the outbox and show it failed.
      done(m.id);
      var p = S.msgs[m.id];
      if (p) {
        // A refusal for good says why in the server's words.
        p.failed = m.code === 'forbidden' && m.message ? m.message : m.code;
        p.pending = false;
        place(p);
        saveLog();
      }
      return;
    }
    if (m.code === 'unauthorized' && S.online && !m.refused) {
      // The answer to identify: this visitor belongs to another signed-in
      // user. Its chat and unsent messages are theirs: forget them and
      // start a new visitor, identified as the page says, at its welcome.
      forget(S.idn ? { id: S.idn.id, hash: S.idn.hash } : S.proof, true, backoff());
    } else if (m.code === 'unauthorized') {
      // Our token is no longer accepted: start afresh as a new visitor.
      S.token = null;
      sset('token', null);
      resetLog();
      saveLog(true);
      attempt = 0;
      drop();
    } else if (FATAL[m.code] && !S.online) {
      fatal(m.message);
    } else if (m.code === 'bad_identity') {
      // Refused: do not vouch for it in the next hello either.
      var p = proofOf(jget('identity', null));
      if (S.idn && p && p.id === S.idn.id && p.hash === S.idn.hash) jset('identity', null);
      if (S.idn && S.proof && S.proof.id === S.idn.id && S.proof.hash === S.idn.hash) S.proof = null;
      S.idn = null;
      if (win.console) console.error('Holdfast.identify: ' + m.message);
    } else if (win.console) {
      console.warn('Holdfast: ' + m.code + ': ' + m.message);
    }
  }
  // Forget this browser's chat (token, cursor, log, outbox and lease) and
  // start over, after `delay` ms, as a new visitor that vouches for `proof`
  // (null: anonymous). `mine`: this tab decided it, so it clears
  // localStorage and starts a new epoch; other tabs follow through
  // current(), with whatever identity this one stored.
  function forget(proof, mine, delay) {
    gen++;
    var t = T, k;
    T = null;
    S.online = false;
    if (t) t.close();
    each([retryTimer, ackTimer, flushTimer], clearTimeout);
    retryTimer = ackTimer = flushTimer = null;
    for (k in S.msgs) if (S.msgs.hasOwnProperty(k)) unplace(k);
    S.msgs = {};
    // Uploads belong to the chat being forgotten.
    each(jobs.slice(), cancel);
    S.token = S.visitor = S.conv = flying = null;
    S.cursor = S.convSeq = connSeq = unacked = holdUntil = 0;
    // The new visitor lands on this page, and is "connecting" at first.
    views = [{ url: win.location.href, title: doc.title, referrer: doc.referrer }];
    everOnline = false;
    started = now();
    if (mine) {
      jset('identity', proof);
      each(['token', 'log', 'outbox', 'lock', 'uploads'], function (n) {
        sset(n, null);
      });
      sset('epoch', EPOCH = uuid7());
    } else {
      EPOCH = sget('epoch');
      proof = proofOf(jget('identity', null));
    }
    S.proof = proof;
    if (S.idn && !(proof && proof.id === S.idn.id)) S.idn = null;
    setState();
    if (!S.fatal) retryTimer = setTimeout(connect, delay);
  }
  // False (after taking the new state) if another tab has reset this
  // browser's chat since this one last looked.
  function current() {
    if (sget('epoch') === EPOCH) return true;
    // Give the tab that reset a moment to be welcomed: its new token is
    // then ours too (see hello).
    forget(null, false, 500 + Math.random() * 1000);
    return false;
  }
  function done(id) {
    if (flying && flying[0] === id) flying = null;
    unqueue(id);
    setState();
    flush();
  }
  // Gone for good: say why once, leave the page as it was, stop everything.
  function fatal(why) {
    S.fatal = why || 'refused';
    if (win.console) console.error('Holdfast: ' + S.fatal);
    gen++;
    var t = T, host = frame || (root && root.host);
    T = null;
    S.online = false;
    if (t) t.close();
    each([retryTimer, ackTimer, flushTimer, offlineTimer], clearTimeout);
    clearInterval(ticker);
    unlock();
    if (host && host.parentNode) host.parentNode.removeChild(host);
    ui = {};
    nodes = {};
  }
  function apply(ev, seq) {
    if (!ev) return;
    if (ev.kind === 'message') {
      if (ev.from === 'agent' && agentTyping) {
        agentTyping = null;
        showTyping();
      }
      addMsg(ev, true);
      done(ev.id); // in the log means durable: no need to send again
    } else if (ev.kind === 'conversation' && seq > S.convSeq) {
      S.conv = { id: ev.id, state: ev.state, agent_name: ev.agent_name };
      S.convSeq = seq;
      setState();
    }
  }
  // Cumulative acks, batched: 50 ms after the first unacked event, or at
  // once after 64 or after a duplicate. Long-poll acks with `after`.
  function ackSoon(now_) {
    if (!T || T.kind !== 'ws') return;
    if (now_ || ++unacked >= 64) return sendAck();
    if (!ackTimer) ackTimer = setTimeout(sendAck, 50);
  }
  function sendAck() {
    clearTimeout(ackTimer);
    ackTimer = null;
    unacked = 0;
    if (connSeq > 0) send({ t: 'ack', seq: connSeq });
  }

  // Send the outbox's oldest entry, unless it is already on this
  // connection or the server asked us to wait.
  function flush() {
    if (!T || !S.online || !leader() || now() < holdUntil) return;
    var e = outbox()[0];
    if (!e || (flying && flying[0] === e.id && flying[1] === gen)) return;
    flying = [e.id, gen];
    T.send(e.t === 'end_chat' ? { t: e.t, id: e.id } :
      e.t === 'leave_message' ? { t: e.t, id: e.id, body: e.body, email: e.email || null } :
      e.attachment ? { t: 'send', id: e.id, body: e.body, attachment: e.attachment } : { t: 'send', id: e.id, body: e.body });
  }
  function enqueue(t, body, email) {
    current();
    var e = { id: uuid7(), t: t, body: body, at: now() };
    if (email) e.email = email;
    var o = outbox();
    o.push(e);
    jset('outbox', o); // durable before the first send
    pending(e);
    setState();
    flush();
  }
  function report() {
    while (S.online && views.length) {
      var p = pageInfo(views.shift());
      send({ t: 'page', url: p.url, title: p.title, referrer: p.referrer });
    }
  }

  // --- WebSocket

  function wsStart() {
    var g = ++gen, ws, hbTimer;
    try {
      ws = new win.WebSocket(WS_URL);
    } catch (e) {
      return lost(true);
    }
    var t = T = {
      kind: 'ws', hb: 0, sentAt: now(), recvAt: now(),
      send: function (m) {
        if (ws.readyState !== 1) return;
        ws.send(JSON.stringify(m));
        t.sentAt = now();
      },
      close: function () {
        clearInterval(hbTimer);
        try {
          ws.close();
        } catch (e) { /* already closed */ }
      }
    };
    var opened = now();
    // Application heartbeat: ping after heartbeat_ms of quiet; a link
    // silent for ~3.3 heartbeats (10 s at the default 3 s) is dead.
    hbTimer = setInterval(function () {
      if (g !== gen) return clearInterval(hbTimer);
      var n = now();
      if (!t.hb) {
        if (n - opened > 10000) drop(); // no welcome: blocked or broken
        return;
      }
      if (n - t.sentAt >= t.hb) t.send({ t: 'ping' });
      if (n - t.recvAt > Math.max(t.hb * 10 / 3, 2000)) drop();
    }, 250);
    ws.onopen = function () {
      if (g === gen) t.send(hello());
    };
    ws.onmessage = function (e) {
      if (g !== gen) return;
      t.recvAt = now();
      onMsg(parse(e.data));
    };
    ws.onclose = ws.onerror = function () {
      clearInterval(hbTimer);
      if (g === gen) lost(!S.online);
    };
    setState();
  }

  // --- Long-poll

  function xhr(method, url, body, token, timeout, cb) {
    var x = new XMLHttpRequest(), fin = false;
    function end() {
      if (fin) return;
      fin = true;
      cb(x.status, parse(x.responseText));
    }
    x.open(method, url, true);
    x.timeout = timeout;
    // text/plain keeps the first cross-origin POST, the hello, "simple" (no
    // preflight).
    if (body) x.setRequestHeader('Content-Type', 'text/plain;charset=UTF-8');
    // The token goes in a header, never in the URL: proxies and servers
    // log URLs.
    if (token) x.setRequestHeader('X-Holdfast-Token', token);
    // A visitor bound to a verified identity is served over long-poll only
    // with that identity's hash: a copied token alone reads nothing.
    if (token && S.proof && S.proof.hash) x.setRequestHeader('X-Holdfast-Identity', S.proof.hash);
    x.onreadystatechange = function () {
      if (x.readyState === 4) end();
    };
    x.ontimeout = x.onerror = x.onabort = function () {
      if (!fin) {
        fin = true;
        cb(0, null);
      }
    };
    x.send(body || null);
    return x;
  }
  function lpStart() {
    var g = ++gen, reqs = [];
    var t = T = {
      kind: 'lp',
      send: function (m) {
        post([m]);
      },
      close: function () {
        each(reqs, function (r) {
          r.abort();
        });
      }
    };
    function req(method, url, body, timeout, cb) {
      var r = xhr(method, url, body, S.online ? S.token : null, timeout, function (status, data) {
        for (var i = 0; i < reqs.length; i++) if (reqs[i] === r) reqs.splice(i, 1);
        if (g !== gen) return;
        if (status === 401) return onError({ code: 'unauthorized', message: 'token refused', refused: true });
        if (status === 0 || status >= 500 || status === 429 || !data || !data.msgs) return lost(!S.online);
        cb(data.msgs);
      });
      reqs.push(r);
    }
    function handle(out) {
      for (var i = 0; i < out.length && g === gen; i++) onMsg(out[i]);
    }
    function post(msgs) {
      req('POST', BASE + '/v1/visitor/lp', JSON.stringify({ msgs: msgs }), 30000, handle);
    }
    // The pending poll is the liveness check; `after` is the cumulative ack.
    function poll() {
      req('GET', BASE + '/v1/visitor/poll?after=' + Math.max(connSeq, 0), null, 60000, function (out) {
        handle(out);
        if (g !== gen) return;
        t.proof = true;
        useful(t);
        // On long-poll because WebSocket did not work: try it again now and
        // then, while nothing waits to be sent.
        if (wsRetryAt && now() >= wsRetryAt && !outbox().length) {
          useLP = false;
          probing = true;
          wsRetryAt = 0;
          return drop();
        }
        poll();
      });
    }
    req('POST', BASE + '/v1/visitor/lp', JSON.stringify({ msgs: [hello()] }), 30000, function (out) {
      handle(out);
      if (g === gen && S.online) poll();
      else if (g === gen) lost(true);
    });
    setState();
  }

  // ------------------------------------------------------------ attachments
  // PROTOCOL.md 10.13. A file goes up in CHUNK-sized PATCHes, one at a
  // time, each at the offset the server last acknowledged. Only once the
  // server has all of it (and has checked what it is) does a `send` naming
  // it go into the outbox, so the message is delivered exactly once like
  // any other. A browser cannot keep a File across a reload: what it can
  // keep (the upload's id, name, size and offset, in `uploads`) lets the
  // same file, attached again, continue where the server is.

  var CHUNK = 262144, MAX_DEFAULT = 20971520, STALL_MS = 20000;
  var jobs = []; // this tab's uploads
  var ended = []; // the last few that ended, for Holdfast.uploads()
  var links = {}; // signed links by attachment id: memory only, they expire
  var limits = null; // welcome.attach: {max_bytes, types}
  var ORIGIN = (/^https?:\/\/[^\/?#]+/i.exec(BASE) || [win.location.protocol + '//' + win.location.host])[0];

  function fill(s, o) {
    return s.replace(/\{(\w+)\}/g, function (x, k) {
      return o[k] == null ? '' : String(o[k]);
    });
  }
  function human(n) {
    n = +n || 0;
    if (n < 1024) return n + ' B';
    var u = ['KB', 'MB', 'GB'], i = -1;
    do {
      n /= 1024;
      i++;
    } while (n >= 1024 && i < 2);
    return (n < 10 ? Math.round(n * 10) / 10 : Math.round(n)) + ' ' + u[i];
  }
  // The description of a file, from the server or storage: plain values
  // only, whatever arrived.
  function fileMeta(a) {
    if (!a || typeof a !== 'object' || typeof a.id !== 'string' || !a.id) return null;
    return {
      id: a.id, name: String(a.name == null ? '' : a.name), mime: String(a.mime == null ? '' : a.mime),
      size: +a.size || 0, image: a.image === true
    };
  }
  // Links from the server are paths on its origin; anything that is not
  // http(s) in the end (javascript:, data:, …) is not a link.
  function safeUrl(u) {
    if (typeof u !== 'string' || !u) return null;
    if (/^\/(?![\/\\])/.test(u)) u = ORIGIN + u;
    return /^https?:\/\/[^\/?#\\\s]+([\/?#]|$)/i.test(u) && !/[\s"'<>\\]/.test(u) ? u : null;
  }
  function maxBytes() {
    return limits && limits.max_bytes > 0 ? limits.max_bytes : MAX_DEFAULT;
  }
  function chatOpen() {
    return !!(S.conv && (S.conv.state === 'active' || S.conv.state === 'queued'));
  }

  // --- what survives a reload

  function saved() {
    var l = jget('uploads', []);
    return l && l.length ? l : [];
  }
  function keepUp(u) {
    if (!u.id || !current()) return;
    var l = saved(), n = [], e = { id: u.id, name: u.name, size: u.size, offset: u.offset, tab: TAB, seen: now(), at: u.at };
    each(l, function (x) {
      if (x.id !== u.id) n.push(x);
    });
    n.push(e);
    jset('uploads', n);
  }
  function unkeep(id) {
    if (!id) return;
    var l = saved(), n = [];
    each(l, function (x) {
      if (x.id !== id) n.push(x);
    });
    if (n.length !== l.length) jset('uploads', n.length ? n : null);
  }
  // Another tab's upload is left alone unless that tab went away (a
  // reload or a closed tab marks it `orphan`) or stopped looking after it.
  function abandoned(x) {
    return x.orphan || now() - (x.seen || 0) > 60000;
  }
  function jobOf(id) {
    for (var i = 0; i < jobs.length; i++) if (jobs[i].id === id) return jobs[i];
    return null;
  }

  // --- sending

  function attachFiles(list) {
    var fs = [], i;
    for (i = 0; list && i < list.length; i++) fs.push(list[i]);
    if (!fs.length || !ui.input) return;
    // What the visitor typed goes with the (first) file.
    var body = clean(ui.input.value, 0);
    if (!/\S/.test(body) || utf8len(body) > 8192) body = '';
    else ui.input.value = '';
    for (i = 0; i < fs.length; i++) attachFile(fs[i], i ? '' : body);
  }
  function attachFile(f, body) {
    var u = {
      key: uuid7(), file: f, name: clean(f.name || 'file', 255) || 'file', size: f.size, type: clean(f.type || '', 100),
      body: body, id: null, offset: 0, state: 'new', tries: 0, sent: [], at: now(), needHead: false, resumed: null
    };
    jobs.push(u);
    if (!(u.size > 0)) return fail(u, STR.empty);
    if (u.size > maxBytes()) return fail(u, fill(STR.tooBig, { size: human(u.size), max: human(maxBytes()) }));
    var types = limits && limits.types;
    if (types && types.length && u.type) {
      var ok = false;
      each(types, function (t) {
        if (t === u.type) ok = true;
      });
      if (!ok) return fail(u, STR.badType);
    }
    // The same file (by name and size) as an upload a reload interrupted:
    // continue that one from the server's offset.
    each(saved(), function (x) {
      if (!u.id && x.name === u.name && x.size === u.size && abandoned(x) && !jobOf(x.id)) {
        u.id = x.id;
        u.offset = x.offset || 0;
        u.needHead = true;
        u.resumed = -1; // the offset the server gives, once asked
        unnote(x.id);
      }
    });
    if (u.id) keepUp(u);
    step(u);
  }
  function step(u) {
    if (u.state === 'cancelled' || u.state === 'failed' || u.state === 'done') return;
    clearTimeout(u.timer);
    if (nav.onLine === false) {
      u.state = 'offline'; // the `online` event steps it again
      return draw(u);
    }
    if (!u.id) return create(u);
    if (u.needHead) return head(u);
    patch(u);
  }
  // Try again after a while; first ask the server where the upload is.
  function later(u, ms, why) {
    u.state = 'retry';
    u.note = why || '';
    u.needHead = !!u.id;
    draw(u);
    clearTimeout(u.timer);
    u.timer = setTimeout(function () {
      step(u);
    }, ms == null ? pause(u) : ms);
  }
  function pause(u) {
    return Math.min(30000, 1000 * Math.pow(2, Math.min(u.tries++, 5))) * (0.5 + Math.random() / 2);
  }
  // One upload request; its answer goes to `cb(status, json, xhr)`, unless
  // the upload was cancelled meanwhile.
  function call(u, method, url, headers, body, cb, progress) {
    var x = new XMLHttpRequest(), fin = false, k, tok = S.token || sget('token');
    function end(st) {
      if (fin) return;
      fin = true;
      if (u.xhr === x) u.xhr = null;
      if (u.state !== 'cancelled' && u.state !== 'failed') cb(st, st ? parse(x.responseText) : null, x);
    }
    x.open(method, url, true);
    x.timeout = 120000;
    u.moved = now();
    if (tok) x.setRequestHeader('X-Holdfast-Token', tok);
    if (tok && S.proof && S.proof.hash) x.setRequestHeader('X-Holdfast-Identity', S.proof.hash);
    for (k in headers) if (headers.hasOwnProperty(k)) x.setRequestHeader(k, headers[k]);
    x.onreadystatechange = function () {
      if (x.readyState === 4) end(x.status);
    };
    x.ontimeout = x.onerror = x.onabort = function () {
      end(0);
    };
    if (progress && x.upload) x.upload.onprogress = function (ev) {
      u.moved = now();
      progress(ev.loaded || 0);
    };
    u.xhr = x;
    try {
      x.send(body);
    } catch (e) {
      end(0);
    }
  }
  function offsetOf(x) {
    var k = parseInt(x && x.getResponseHeader('Upload-Offset'), 10);
    return isNaN(k) ? -1 : k;
  }
  // Any answer but progress.
  function trouble(u, st, d, x) {
    u.fails = (u.fails || 0) + 1;
    var msg = d && typeof d.message === 'string' ? clean(d.message, 500) : '';
    if (st === 413 || st === 415 || st === 422 || st === 400) return fail(u, msg || STR.badType);
    if (st === 404 && u.id) {
      // Gone (swept, or expired): this file starts over as a new upload.
      unkeep(u.id);
      u.id = null;
      u.offset = 0;
      return later(u, 0);
    }
    if (st === 429) {
      var ra = parseInt(x && x.getResponseHeader('Retry-After'), 10);
      return later(u, ra > 0 ? ra * 1000 : null, msg);
    }
    // 507 (a full disk), 5xx, 401 (the transport renews the token), a lost
    // link: keep what the server has, and try again.
    later(u, null, st ? msg : '');
  }
  function create(u) {
    if (!chatOpen()) {
      // Files go into an open chat. Without one, the visitor's words (or a
      // line naming the file) start it, as typing would; the upload
      // follows as soon as the chat is there (setState steps it).
      if (!u.opened) {
        u.opened = true;
        enqueue('send', u.body || fill(STR.opener, { name: u.name }));
        u.body = '';
      }
      u.state = 'chat';
      return draw(u);
    }
    u.state = 'up';
    draw(u);
    var req = JSON.stringify({ length: u.size, name: u.name, type: u.type || 'application/octet-stream' });
    call(u, 'POST', BASE + '/v1/attach', { 'Content-Type': 'application/json' }, req, function (st, d, x) {
      if (st === 201 && d && typeof d.id === 'string' && /^[0-9a-zA-Z_-]{1,128}$/.test(d.id)) {
        u.id = d.id;
        u.offset = 0;
        keepUp(u);
        return step(u);
      }
      if (st === 409 && !u.opened) {
        // The chat this tab thought open has ended: start one.
        u.opened = true;
        enqueue('send', u.body || fill(STR.opener, { name: u.name }));
        u.body = '';
      }
      if (st === 409 && u.tries > 6) return fail(u, d && d.message ? clean(d.message, 500) : STR.unavailable);
      trouble(u, st === 409 ? 503 : st, d, x);
    });
  }
  function head(u) {
    u.state = 'up';
    draw(u);
    call(u, 'HEAD', BASE + '/v1/attach/' + u.id, {}, null, function (st, d, x) {
      var k = offsetOf(x);
      if (st === 200 && k >= 0 && k <= u.size) {
        u.offset = k;
        u.needHead = false;
        if (u.resumed === -1) u.resumed = k;
        keepUp(u);
        return step(u);
      }
      trouble(u, st, d, x);
    });
  }
  function patch(u) {
    if (u.offset >= u.size) return complete(u, null);
    var from = u.offset, to = Math.min(u.size, from + CHUNK);
    u.state = 'up';
    u.sent.push(from);
    u.shown = from;
    draw(u);
    call(u, 'PATCH', BASE + '/v1/attach/' + u.id, { 'Upload-Offset': String(from), 'Content-Type': 'application/offset+octet-stream' },
      u.file.slice(from, to), function (st, d, x) {
        var k = offsetOf(x);
        if (st === 200 && d && d.attachment) return complete(u, d.attachment);
        if ((st === 204 && k > from && k <= u.size) || (st === 409 && k >= 0 && k <= u.size && k !== from)) {
          // 409: another offset is stored (an earlier answer was lost);
          // continue from there, or finish if it is all there.
          if (st === 204) u.tries = 0;
          u.offset = k;
          keepUp(u);
          return step(u);
        }
        trouble(u, st, d, x);
      }, function (loaded) {
        u.shown = Math.min(to, from + loaded);
        draw(u);
      });
  }
  // All of it is on the server: now, and only now, the message.
  function complete(u, att) {
    if (!current()) return;
    u.state = 'done';
    var meta = fileMeta(att) || { id: u.id, name: u.name, mime: u.type, size: u.size, image: /^image\/(png|jpeg|gif|webp)$/.test(u.type) };
    var e = { id: uuid7(), t: 'send', body: u.body, attachment: u.id, file: meta, at: now() };
    var o = outbox();
    o.push(e);
    jset('outbox', o); // durable before the first send, like any message
    unkeep(u.id);
    forgetJob(u);
    pending(e);
    setState();
    flush();
  }
  function fail(u, why) {
    u.state = 'failed';
    u.note = why;
    clearTimeout(u.timer);
    if (u.xhr) u.xhr.abort();
    unkeep(u.id); // the server sweeps what it has
    draw(u);
  }
  function cancel(u) {
    u.state = 'cancelled';
    clearTimeout(u.timer);
    if (u.xhr) u.xhr.abort();
    unkeep(u.id);
    forgetJob(u);
  }
  function forgetJob(u) {
    for (var i = 0; i < jobs.length; i++) {
      if (jobs[i] === u) {
        jobs.splice(i, 1);
        ended.push(u);
        if (ended.length > 20) ended.shift();
      }
    }
    if (u.node && u.node.parentNode) u.node.parentNode.removeChild(u.node);
    u.node = null;
    if (ui.tray) ui.tray.hidden = !ui.tray.firstChild;
  }
  // Uploads waiting for a chat, or for the network.
  function kick(net) {
    each(jobs.slice(), function (u) {
      if ((u.state === 'chat' && chatOpen()) || (net && (u.state === 'offline' || u.state === 'retry'))) {
        if (net) {
          // Back online: ask the server where the upload is first.
          u.tries = 0;
          u.needHead = !!u.id;
        }
        step(u);
      }
    });
  }

  // --- the uploads tray

  function draw(u) {
    if (!ui.tray) return;
    var n = u.node;
    if (!n) {
      n = u.node = el('div', 'uj', { 'data-upload': u.key }, [
        el('div', 'un'), el('div', 'ur', null, [el('progress', null, { max: '100', value: '0' }), el('span', 'upc')]),
        el('div', 'um'), el('button', 'ux', { type: 'button' })
      ]);
      listen(n.lastChild, 'click', function () {
        var focus = ui.input;
        if (u.state === 'failed') forgetJob(u);
        else cancel(u);
        focus.focus();
      });
      ui.tray.appendChild(n);
      ui.tray.hidden = false;
    }
    var bad = u.state === 'failed', pct = u.size ? Math.floor(100 * Math.max(u.shown || 0, u.offset) / u.size) : 0;
    n.className = 'uj' + (bad ? ' err' : '');
    n.setAttribute('data-state', u.state);
    text(n.childNodes[0], u.name + ' · ' + human(u.size));
    n.childNodes[1].hidden = bad;
    n.childNodes[1].firstChild.value = pct;
    text(n.childNodes[1].lastChild, pct + '%');
    var m = bad ? u.note : u.state === 'chat' ? STR.chat : u.state === 'offline' ? STR.waitNet : u.state === 'retry' ? u.note || STR.waitNet : '';
    text(n.childNodes[2], m || '');
    n.childNodes[2].hidden = !m;
    // A refusal is announced; progress is not (it would chatter).
    if (bad) n.childNodes[2].setAttribute('role', 'alert');
    text(n.lastChild, bad ? STR.dismiss : STR.cancel);
    n.lastChild.setAttribute('aria-label', fill(bad ? STR.dismissOf : STR.cancelOf, { name: u.name }));
  }
  // After a reload: say what happened to the upload this page was doing.
  function notes() {
    if (!ui.tray) return;
    var l = saved(), keep = [];
    each(l, function (x) {
      // The server sweeps uploads abandoned for a day.
      if (now() - (x.at || 0) > 20 * 3600000) return;
      keep.push(x);
      if (!abandoned(x) || x.dismissed || jobOf(x.id)) return;
      var n = el('div', 'uj int', { 'data-note': x.id }, [
        el('div', 'um', { role: 'status' }, [fill(STR.interrupted, { name: String(x.name) })]),
        el('button', 'ux', { type: 'button', 'aria-label': fill(STR.dismissOf, { name: String(x.name) }) }, [STR.dismiss])
      ]);
      listen(n.lastChild, 'click', function () {
        var k = saved();
        each(k, function (y) {
          if (y.id === x.id) y.dismissed = true;
        });
        jset('uploads', k.length ? k : null);
        unnote(x.id);
        ui.input.focus();
      });
      ui.tray.appendChild(n);
    });
    if (keep.length !== l.length) jset('uploads', keep.length ? keep : null);
    ui.tray.hidden = !ui.tray.firstChild;
  }
  function unnote(id) {
    var c = ui.tray && ui.tray.firstChild;
    for (; c; c = c.nextSibling) {
      if (c.getAttribute('data-note') === id) {
        ui.tray.removeChild(c);
        break;
      }
    }
    if (ui.tray) ui.tray.hidden = !ui.tray.firstChild;
  }

  // --- showing

  // A fresh signed link for attachment `id` (cached in memory until
  // shortly before it expires); `cb(null)` if the server gives none.
  function linkFor(id, cb) {
    var l = links[id];
    if (l && l.url && l.exp > now()) return cb(l);
    if (l && l.wait) return l.wait.push(cb);
    if (l && !l.url && now() - l.at < 30000) return cb(null); // just refused: not again at once
    links[id] = { wait: [cb] };
    xhr('GET', BASE + '/v1/attach/' + encodeURIComponent(id) + '/link', null, S.token || sget('token'), 15000, function (st, d) {
      var w = links[id].wait, url = st === 200 && d && safeUrl(d.url);
      // Valid for an hour by the server's clock; the widget counts 50
      // minutes by its own, so a skewed clock cannot keep a dead link.
      links[id] = url ? { url: url, thumb: safeUrl(d.thumb_url), view: safeUrl(d.view_url), exp: now() + 3000000 } : { at: now() };
      each(w, function (f) {
        f(url ? links[id] : null);
      });
    });
  }
  function fileNode(a, n) {
    if (n.hfF && n.hfF.getAttribute('data-file') === a.id) return;
    if (n.hfF) n.removeChild(n.hfF);
    var f, img = null;
    // A click on an image opens the server's full-size re-encoding, shown
    // in the tab; the original (with its EXIF) is only ever a download.
    function hrefOf(l) {
      return (img && l.view) || l.url;
    }
    if (a.image) {
      img = el('img', null, { alt: a.name });
      f = el('a', 'th', { 'data-file': a.id, target: '_blank', rel: 'noopener noreferrer', title: a.name }, [img]);
    } else {
      f = el('a', 'fc', { 'data-file': a.id, target: '_blank', rel: 'noopener noreferrer' }, [
        el('span', 'fn', null, [a.name]), el('span', 'fm', null, [human(a.size) + (a.mime ? ' · ' + a.mime : '')]),
        el('span', 'fd', null, [STR.download])
      ]);
    }
    n.hfF = f;
    n.insertBefore(f, n.hfB);
    function wire() {
      linkFor(a.id, function (l) {
        f.className = f.className.replace(/ na$/, '') + (l ? '' : ' na');
        f.title = l ? a.name : STR.unavailable;
        if (!l) return;
        f.setAttribute('href', hrefOf(l));
        if (img && !l.thumb) {
          // An image the server made no thumbnail of: show it as a file.
          if (n.hfF !== f) return;
          n.removeChild(f);
          n.hfF = null;
          return fileNode({ id: a.id, name: a.name, mime: a.mime, size: a.size, image: false }, n);
        }
        if (img && l.thumb && img.getAttribute('src') !== l.thumb && !img.naturalWidth) img.setAttribute('src', l.thumb);
      });
    }
    if (img) {
      listen(img, 'error', function () {
        // An expired thumbnail link (a page left open): one fresh try.
        if (img.hfRetried) return;
        img.hfRetried = true;
        if (links[a.id] && links[a.id].url) links[a.id].exp = 0;
        img.removeAttribute('src');
        wire();
      });
    }
    listen(f, 'click', function (e) {
      var l = links[a.id];
      if (l && l.url && l.exp > now()) return; // the link is good: the browser opens it
      e.preventDefault();
      // Expired (or never fetched): get a fresh one and open it.
      linkFor(a.id, function (l2) {
        if (!l2) return wire();
        f.setAttribute('href', hrefOf(l2));
        win.open(hrefOf(l2), '_blank', 'noopener,noreferrer');
      });
    });
    wire();
  }

  // For diagnostics (and the tests): where this tab's uploads stand.
  function uploadsState() {
    var r = [];
    each(ended.concat(jobs), function (u) {
      r.push({ name: u.name, size: u.size, id: u.id, state: u.state, offset: u.offset, resumed: u.resumed, sent: u.sent.slice(),
        fails: u.fails || 0, note: u.note || null });
    });
    return r;
  }

  // ------------------------------------------------------------ browser events

  listen(win, 'online', function () {
    attempt = 0;
    if (!T) connect();
    kick(true);
  });
  listen(win, 'offline', function () {
    drop(); // the link is gone; `online` brings it back at once
    // A chunk on its way is left to finish or fail by itself: after a short
    // blip it often gets through; if it stalls, the ticker ends it.
  });
  listen(win, 'pagehide', function () {
    unlock();
    // This page's uploads end with it (a reload, a closed tab): the next
    // page says so, and can continue them if the file is attached again.
    var l = saved(), mine = false;
    each(l, function (x) {
      if (x.tab === TAB && jobOf(x.id)) x.orphan = mine = true;
    });
    if (mine) jset('uploads', l);
  });
  listen(win, 'pageshow', function (e) {
    if (e.persisted && !T) connect();
    // Back from the back-forward cache: still this page's uploads.
    if (e.persisted) {
      each(jobs, function (u) {
        keepUp(u);
      });
      kick(true);
    }
  });
  listen(win, 'storage', function (e) {
    if (!e.key || e.key.indexOf(NS) !== 0) return;
    var k = e.key.slice(NS.length);
    if (k === 'epoch') {
      current();
    } else if (k === 'log') {
      if (mergeLog(parse(e.newValue))) {
        for (var id in S.msgs) if (S.msgs.hasOwnProperty(id)) place(S.msgs[id]);
        setState();
      }
    } else if (k === 'outbox') {
      each(outbox(), pending);
      setState(); // another tab may be ending the chat
      flush();
    } else if (k === 'lock') {
      flush();
    }
  });
  // Renew the lease, and pick up another tab's outbox if it went away.
  var ticker = setInterval(function () {
    if (S.online && outbox().length) flush();
    else if (S.online) leader();
    each(jobs, function (u) {
      // Tell other tabs these uploads are still looked after.
      if (u.id && u.state !== 'failed' && u.state !== 'done') keepUp(u);
      // A chunk that has not moved for STALL_MS is on a dead link (a pulled
      // cable gives no `offline` event): end it, ask, go on.
      if (u.xhr && now() - u.moved > STALL_MS) u.xhr.abort();
      // Offline by navigator.onLine, and no `online` event came: look again.
      if (u.state === 'offline' && nav.onLine !== false) step(u);
    });
  }, 2000);
  // Single-page apps: report every history change as a page view, with
  // the page the visitor was on as its referrer.
  function navigated() {
    setTimeout(function () {
      if (here === win.location.href) return;
      views.push({ url: win.location.href, title: doc.title, referrer: here });
      if (views.length > 20) views.shift();
      here = win.location.href;
      report();
    }, 50);
  }
  var H = win.history;
  each(['pushState', 'replaceState'], function (name) {
    var orig = H && H[name];
    if (typeof orig !== 'function') return;
    H[name] = function () {
      var r = orig.apply(this, arguments);
      navigated();
      return r;
    };
  });
  listen(win, 'popstate', navigated);
  listen(win, 'hashchange', navigated);

  // ------------------------------------------------------------ UI

  var D = doc, root = null, frame = null, ui = {}, nodes = {};
  var CSS = [
    // Page CSS cannot reach into the shadow root (or iframe); the host's
    // inherited properties are cut off by `all: initial` on the host.
    ':host{all:initial}',
    '*{box-sizing:border-box;margin:0;padding:0}',
    '.hf{font:15px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,"PingFang SC","Microsoft YaHei",sans-serif;color:#1d2330;text-align:left}',
    '[hidden]{display:none!important}',
    '.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}',
    'button,textarea,input{font:inherit;color:inherit;border:0;background:none}',
    'button{cursor:pointer}',
    ':focus-visible{outline:3px solid #ffb020;outline-offset:2px}',
    '.go{position:fixed;right:20px;bottom:20px;width:58px;height:58px;border-radius:50%;background:#2452c8;color:#fff;display:flex;align-items:center;justify-content:center;box-shadow:0 6px 20px rgba(20,30,70,.35);z-index:2147483000;transition:transform .15s}',
    '.go:hover{transform:scale(1.06)}',
    '.go svg,.x svg,.sb svg{width:26px;height:26px;fill:currentColor}',
    '.p{position:fixed;right:20px;bottom:92px;width:370px;height:560px;max-height:calc(100% - 112px);background:#fff;border-radius:16px;box-shadow:0 16px 48px rgba(20,30,70,.3);display:flex;flex-direction:column;overflow:hidden;z-index:2147483001}',
    '.hd{background:#2452c8;color:#fff;padding:16px 14px 16px 18px;display:flex;align-items:center}',
    '.hd div{flex:1}',
    'h2{font-size:17px;font-weight:600;line-height:1.25}',
    '.sub{font-size:13px;opacity:.88;margin-top:2px}',
    '.x{width:36px;height:36px;margin-left:10px;border-radius:50%;display:flex;align-items:center;justify-content:center;color:#fff}',
    '.x:hover,.end:hover{background:rgba(255,255,255,.16)}',
    '.end{font-size:13px;font-weight:600;color:#fff;border:1px solid rgba(255,255,255,.7);border-radius:16px;padding:4px 11px;margin-left:10px;white-space:nowrap}',
    '.ask{display:flex;align-items:center;flex-wrap:wrap;padding:8px 14px 8px 18px;background:#eef2fb;border-bottom:1px solid #d6ddee;font-size:13px}',
    '.ask span{flex:1;margin-right:6px}',
    '.ask button{margin:2px 0 2px 8px;padding:5px 12px;border-radius:8px;font-weight:600;border:1px solid #c9d0dd;background:#fff}',
    '.ask .yes{background:#b3261e;border-color:#b3261e;color:#fff}',
    '.x svg{width:22px;height:22px}',
    '.st{background:#fff4d6;color:#6b4a00;font-size:13px;padding:7px 18px;border-bottom:1px solid #f1dfa8}',
    '.ty{padding:4px 18px;font-size:12px;font-style:italic;color:#5b6475;background:#f5f7fb}',
    '.lg{flex:1;overflow-y:auto;padding:16px 14px;background:#f5f7fb;display:flex;flex-direction:column}',
    '.m+.m{margin-top:8px}',
    '.m{max-width:82%;align-self:flex-start}',
    '.m.visitor{align-self:flex-end}',
    '.m.system{align-self:center;max-width:92%;color:#5e6678;font-size:13px;text-align:center}',
    '.who{font-size:12px;color:#5e6678;margin:0 4px 2px}',
    '.visitor .who{text-align:right}',
    '.b{padding:9px 13px;border-radius:16px;background:#fff;border:1px solid #e3e7ef;white-space:pre-wrap;word-wrap:break-word;overflow-wrap:anywhere}',
    '.visitor .b{background:#2452c8;color:#fff;border-color:#2452c8}',
    '.b a{color:inherit;text-decoration:underline}',
    '.system .b{background:none;border:0;padding:2px}',
    '.wait .b{opacity:.7}',
    '.bad .b{background:#fde8e8;color:#8a1c1c;border-color:#f3b9b9}',
    '.s{font-size:12px;color:#5e6678;margin:2px 6px 0;text-align:right}',
    '.bad .s{color:#a11}',
    '.lv{padding:14px 18px;display:flex;flex-direction:column;border-top:1px solid #e3e7ef}',
    '.pk{padding:14px 18px;display:flex;flex-direction:column;border-top:1px solid #e3e7ef}',
    '.pk>*+*{margin-top:8px}',
    '.pk h3{font-size:15px;font-weight:600}',
    '.pk button{text-align:left;border:1px solid #c9d0dd;border-radius:10px;padding:9px 12px;background:#fff;overflow-wrap:anywhere}',
    '.pk button:hover{border-color:#2452c8}',
    '.pk button span{color:#5e6678;font-size:13px}',
    '.lv>*+*{margin-top:8px}',
    '.lv h3{font-size:15px;font-weight:600}',
    '.lv p{font-size:13px;color:#5e6678}',
    '.lv label{font-size:13px;font-weight:600}',
    '.lv textarea,.lv input,.cp textarea{display:block;width:100%;border:1px solid #c9d0dd;border-radius:10px;padding:9px 11px;background:#fff;color:#1d2330}',
    '.lv textarea{height:84px;resize:none}',
    '.lv button{align-self:flex-end;background:#2452c8;color:#fff;border-radius:10px;padding:9px 16px;font-weight:600}',
    '.cp{display:flex;align-items:flex-end;padding:10px 12px;border-top:1px solid #e3e7ef;background:#fff}',
    '.cp textarea{flex:1;resize:none;height:44px;max-height:120px;margin-right:8px}',
    '.sb{width:44px;height:44px;border-radius:50%;background:#2452c8;color:#fff;display:flex;align-items:center;justify-content:center;flex:none}',
    '.sb svg{width:22px;height:22px}',
    '.ab{width:40px;height:44px;border-radius:10px;color:#5e6678;display:flex;align-items:center;justify-content:center;flex:none;margin-right:4px}',
    '.ab:hover{background:#eef2fb;color:#2452c8}',
    '.ab svg{width:22px;height:22px;fill:currentColor}',
    '.tr{border-top:1px solid #e3e7ef;background:#fff;padding:6px 12px;max-height:40%;overflow-y:auto}',
    '.uj{display:flex;flex-wrap:wrap;align-items:center;padding:5px 0;font-size:13px}',
    '.uj+.uj{border-top:1px solid #eef0f5}',
    '.un{flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-weight:600}',
    '.ur{display:flex;align-items:center;width:100%;order:3;margin-top:4px}',
    '.ur progress{flex:1;height:6px;margin-right:8px;accent-color:#2452c8}',
    '.upc{font-size:12px;color:#5e6678;min-width:34px;text-align:right}',
    '.um{width:100%;order:4;color:#5e6678;margin-top:2px;overflow-wrap:anywhere}',
    '.err .um,.err .un{color:#a11}',
    '.int .um{flex:1;width:auto;order:0;color:#6b4a00}',
    '.ux{font-size:12px;font-weight:600;color:#2452c8;padding:3px 8px;border-radius:8px;margin-left:8px}',
    '.ux:hover{background:#eef2fb}',
    '.dz{position:absolute;top:0;left:0;right:0;bottom:0;background:rgba(36,82,200,.12);border:3px dashed #2452c8;border-radius:16px;display:flex;align-items:center;justify-content:center;pointer-events:none;z-index:2}',
    '.dz span{background:#fff;color:#2452c8;font-weight:600;padding:10px 16px;border-radius:10px;box-shadow:0 4px 14px rgba(20,30,70,.2)}',
    '.th{display:block;line-height:0;margin:2px 0}',
    '.th img{display:block;max-width:220px;max-height:220px;min-width:48px;min-height:48px;border-radius:12px;border:1px solid #e3e7ef;background:#e9edf5}',
    '.fc{display:flex;flex-direction:column;padding:9px 13px;border-radius:14px;border:1px solid #c9d0dd;background:#fff;color:#1d2330;text-decoration:none;min-width:180px;margin:2px 0}',
    '.fc:hover{border-color:#2452c8}',
    '.fn{font-weight:600;overflow-wrap:anywhere}',
    '.fm{font-size:12px;color:#5e6678}',
    '.fd{font-size:13px;color:#2452c8;font-weight:600;margin-top:2px}',
    '.na{opacity:.6}',
    '.visitor .th,.visitor .fc{margin-left:auto}',
    '.m>.b+.s,.m>a+.b{margin-top:3px}',
    // Phones (the class follows the page's width, also from inside an iframe).
    '.sm .p{right:0;bottom:0;width:100%;height:100%;max-height:none;border-radius:0}',
    '.sm.on .go{display:none}',
    '.inv{position:fixed;right:20px;bottom:90px;max-width:300px;background:#fff;color:#1b2230;border-radius:12px;padding:12px 14px;box-shadow:0 6px 24px rgba(20,30,70,.3);z-index:2147483000;font-size:14px;line-height:1.4;white-space:pre-wrap}',
    '.inv .ib{display:flex;gap:8px;margin-top:10px;align-items:center}',
    '.inv .ir{background:#2452c8;color:#fff;border-radius:6px;padding:6px 12px}',
    '.inv .ix{margin-left:auto;color:#4a5468;padding:4px 6px}',
    '.on .inv{display:none}'
  ].join('\n');

  function el(name, cls, attrs, kids) {
    var n = D.createElement(name), k;
    if (cls) n.className = cls;
    for (k in attrs || {}) if (attrs.hasOwnProperty(k)) n.setAttribute(k, attrs[k]);
    each(kids || [], function (c) {
      n.appendChild(typeof c === 'string' ? D.createTextNode(c) : c);
    });
    return n;
  }
  function icon(path) {
    var ns = 'http://www.w3.org/2000/svg', s = D.createElementNS(ns, 'svg'), p = D.createElementNS(ns, 'path');
    s.setAttribute('viewBox', '0 0 24 24');
    s.setAttribute('aria-hidden', 'true');
    s.setAttribute('focusable', 'false');
    p.setAttribute('d', path);
    s.appendChild(p);
    return s;
  }
  function text(n, s) {
    n.textContent = s; // text, never HTML
  }
  // Message text with its web and mail addresses as links. Only http,
  // https and mailto count: anything else (javascript:, data:) stays text.
  // Links open in a new tab that cannot reach back into this page, and
  // carry no referrer (the page URL may hold a visitor's details).
  // Chinese and full-width punctuation and curly quotes end a link too:
  // Chinese text puts no space before its full stop. (The app's links.rs
  // finds links by the same rule.)
  var LINK = /\b(?:https?:\/\/|mailto:)[^\s<>"'\u2018-\u201F\u3000-\u303F\uFF00-\uFF65]+/gi;
  function count(s, c) {
    return s.split(c).length - 1;
  }
  // Sentence punctuation off the end; a closing bracket stays when the
  // link holds the one that opens it (…/wiki/Rust_(language)).
  function trimLink(u) {
    for (;;) {
      var c = u.charAt(u.length - 1);
      var drop = c && ('.,;:!?'.indexOf(c) >= 0 || (c === ')' && count(u, '(') < count(u, ')')) || (c === ']' && count(u, '[') < count(u, ']')));
      if (!drop) return u;
      u = u.slice(0, -1);
    }
  }
  function linkify(n, s) {
    n.textContent = '';
    var at = 0, m;
    LINK.lastIndex = 0;
    while ((m = LINK.exec(s))) {
      var url = trimLink(m[0]);
      if (!url || /^(https?:\/\/|mailto:)$/i.test(url)) continue;
      if (m.index > at) n.appendChild(D.createTextNode(s.slice(at, m.index)));
      var a = D.createElement('a');
      a.href = url;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.textContent = url;
      n.appendChild(a);
      at = m.index + url.length;
      LINK.lastIndex = at;
    }
    if (at < s.length) n.appendChild(D.createTextNode(s.slice(at)));
  }

  // Shadow DOM when available; otherwise an iframe, which isolates styles
  // just as well in older browsers.
  function mount() {
    if (root || S.fatal) return;
    var host = D.createElement('holdfast-widget');
    host.style.cssText = 'all:initial!important;display:block!important;position:fixed!important;top:0!important;left:0!important;width:0!important;height:0!important;z-index:2147483000!important';
    if (host.attachShadow && opt('isolation') !== 'iframe') {
      root = host.attachShadow({ mode: 'open' });
      doc.body.appendChild(host);
    } else {
      frame = D.createElement('iframe');
      frame.title = STR.title;
      frame.style.cssText = 'position:fixed!important;right:0!important;bottom:0!important;border:0!important;background:transparent!important;z-index:2147483000!important;width:100px;height:100px';
      frame.setAttribute('allowtransparency', 'true');
      doc.body.appendChild(frame);
      var fd = frame.contentWindow.document;
      fd.open();
      fd.write('<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"></head><body style="margin:0;background:transparent"></body></html>');
      fd.close();
      D = fd;
      root = fd.body;
    }
    root.appendChild(el('style', null, null, [CSS]));
    ui.send = el('button', 'sb', { type: 'submit', 'aria-label': STR.send }, [icon('M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z')]);
    ui.input = el('textarea', null, { id: 'hf-in', rows: '1', placeholder: STR.ph, maxlength: '8000' });
    ui.attach = el('button', 'ab', { type: 'button', 'aria-label': STR.attach, title: STR.attach },
      [icon('M16.5 6.5v10.2a4.5 4.5 0 0 1-9 0V5.8a3 3 0 0 1 6 0v10a1.5 1.5 0 0 1-3 0V6.5H9v9.3a3 3 0 0 0 6 0v-10a4.5 4.5 0 0 0-9 0v10.9a6 6 0 0 0 12 0V6.5z')]);
    ui.file = el('input', null, { id: 'hf-file', type: 'file', multiple: '', hidden: '', tabindex: '-1', 'aria-hidden': 'true' });
    ui.compose = el('form', 'cp', null, [el('label', 'sr', { 'for': 'hf-in' }, [STR.label]), ui.attach, ui.file, ui.input, ui.send]);
    ui.typing = el('div', 'ty', { id: 'hf-typing', 'aria-live': 'polite', hidden: '' });
    ui.tray = el('div', 'tr', { hidden: '' });
    ui.drop = el('div', 'dz', { hidden: '', 'aria-hidden': 'true' }, [el('span', null, null, [STR.drop])]);
    ui.lmsg = el('textarea', null, { id: 'hf-lm', maxlength: '8000' });
    ui.lmail = el('input', null, { id: 'hf-le', type: 'email', autocomplete: 'email' });
    ui.lnote = el('p', null, { role: 'status' }, [STR.leaveP]);
    ui.leave = el('form', 'lv', { hidden: '' }, [
      el('h3', null, null, [STR.leaveT]), ui.lnote,
      el('label', null, { 'for': 'hf-lm' }, [STR.label]), ui.lmsg,
      el('label', null, { 'for': 'hf-le' }, [STR.email]), ui.lmail,
      el('button', null, { type: 'submit' }, [STR.leave])
    ]);
    ui.pick = el('div', 'pk', { role: 'group', 'aria-labelledby': 'hf-pick', hidden: '' });
    ui.log = el('div', 'lg', { role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': STR.log, tabindex: '0' });
    ui.status = el('div', 'st', { role: 'status', 'aria-live': 'polite', hidden: '' });
    ui.sub = el('p', 'sub', null, [STR.sub]);
    ui.close = el('button', 'x', { type: 'button', 'aria-label': STR.close }, [icon('M18.3 5.7 12 12l6.3 6.3-1.4 1.4L10.6 13.4 4.3 19.7l-1.4-1.4L9.2 12 2.9 5.7l1.4-1.4 6.3 6.3 6.3-6.3z')]);
    ui.end = el('button', 'end', { type: 'button', 'aria-label': STR.endL, hidden: '' }, [STR.end]);
    ui.yes = el('button', 'yes', { type: 'button' }, [STR.yes]);
    ui.no = el('button', 'no', { type: 'button' }, [STR.no]);
    ui.ask = el('div', 'ask', { role: 'group', 'aria-labelledby': 'hf-ask', hidden: '' }, [el('span', null, { id: 'hf-ask' }, [STR.endQ]), ui.yes, ui.no]);
    ui.panel = el('div', 'p', { id: 'hf-panel', role: 'dialog', 'aria-labelledby': 'hf-title', hidden: '' }, [
      el('div', 'hd', null, [el('div', null, null, [el('h2', null, { id: 'hf-title' }, [STR.title]), ui.sub]), ui.end, ui.close]),
      ui.ask, ui.status, ui.log, ui.typing, ui.tray, ui.pick, ui.leave, ui.compose, ui.drop
    ]);
    ui.go = el('button', 'go', { type: 'button', 'aria-label': STR.open, 'aria-expanded': 'false', 'aria-controls': 'hf-panel' },
      [icon('M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2zm3 6v2h2V9zm4 0v2h2V9zm4 0v2h2V9z')]);
    ui.top = el('div', 'hf', { lang: ZH ? 'zh-CN' : 'en' }, [ui.panel, ui.go]);
    root.appendChild(ui.top);

    listen(ui.go, 'click', function () {
      if (S.open) api.close();
      else api.open();
    });
    listen(ui.close, 'click', function () {
      api.close();
    });
    // Asked inline, not with window.confirm: that would block the page.
    listen(ui.end, 'click', function () {
      ui.ask.hidden = false;
      ui.yes.focus();
    });
    listen(ui.no, 'click', unask);
    listen(ui.yes, 'click', function () {
      ui.ask.hidden = true;
      enqueue('end_chat');
      ui.input.focus();
    });
    listen(ui.compose, 'submit', function (e) {
      e.preventDefault();
      submit(ui.input, 'send');
    });
    listen(ui.input, 'input', typingInput);
    listen(ui.input, 'keydown', function (e) {
      // Enter sends, Shift+Enter is a new line; not while an IME composes.
      if ((e.key === 'Enter' || e.keyCode === 13) && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        submit(ui.input, 'send');
      }
    });
    listen(ui.leave, 'submit', function (e) {
      e.preventDefault();
      if (submit(ui.lmsg, 'leave_message', clean(ui.lmail.value, 256).replace(/^\s+|\s+$/g, ''))) text(ui.lnote, STR.thanks);
    });
    listen(ui.top, 'keydown', keys);
    listen(ui.attach, 'click', function () {
      ui.file.click();
    });
    listen(ui.file, 'change', function () {
      attachFiles(ui.file.files);
      ui.file.value = ''; // the same file again is a new choice
    });
    // Files dragged onto the panel: a visible hint, and the drop attaches.
    var depth = 0;
    function dragged(e) {
      var t = e.dataTransfer && e.dataTransfer.types;
      for (var i = 0; t && i < t.length; i++) if (t[i] === 'Files') return !ui.compose.hidden;
      return false;
    }
    listen(ui.panel, 'dragenter', function (e) {
      if (!dragged(e)) return;
      e.preventDefault();
      depth++;
      ui.drop.hidden = false;
    });
    listen(ui.panel, 'dragover', function (e) {
      if (!dragged(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    listen(ui.panel, 'dragleave', function (e) {
      if (dragged(e) && --depth <= 0) {
        depth = 0;
        ui.drop.hidden = true;
      }
    });
    listen(ui.panel, 'drop', function (e) {
      if (!dragged(e)) return;
      e.preventDefault();
      depth = 0;
      ui.drop.hidden = true;
      attachFiles(e.dataTransfer.files);
    });
    // A pasted screenshot (or copied file) is attached; pasted text stays text.
    listen(ui.input, 'paste', function (e) {
      var d = e.clipboardData, fs = [], i, f;
      for (i = 0; d && d.files && i < d.files.length; i++) fs.push(d.files[i]);
      for (i = 0; d && !fs.length && d.items && i < d.items.length; i++) {
        f = d.items[i].kind === 'file' && d.items[i].getAsFile();
        if (f) fs.push(f);
      }
      if (!fs.length) return;
      e.preventDefault();
      attachFiles(fs);
    });
    listen(win, 'resize', show);
    var k;
    for (k in S.msgs) if (S.msgs.hasOwnProperty(k)) place(S.msgs[k]);
    notes();
    show();
    setState();
  }
  function keys(e) {
    if ((e.key === 'Escape' || e.key === 'Esc' || e.keyCode === 27) && S.open) {
      e.preventDefault();
      if (ui.ask.hidden) api.close();
      else unask();
    }
  }
  function unask() {
    ui.ask.hidden = true;
    ui.end.focus();
  }
  function submit(box, t, email) {
    var body = clean(box.value, 0);
    if (!/\S/.test(body)) return false;
    if (utf8len(body) > 8192) {
      status(STR.tooLong);
      return false;
    }
    box.value = '';
    if (box === ui.input) typingStop();
    enqueue(t, body, email);
    return true;
  }

  // --- typing signals (PROTOCOL.md 10.18): never in the outbox, sent only
  // while connected, at most one every TYPING_GAP_MS; the draft only when
  // the welcome said sneak_peek.

  var TYPING_GAP_MS = 250, TYPING_REFRESH_MS = 2000, TYPING_IDLE_MS = 5000, AGENT_TYPING_MS = 6000;
  var peek = false, typed = { sent: false, at: 0, timer: null, idle: null, draft: null };
  var agentTyping = null, agentTypingTimer = null;
  function chatting() {
    return !!(S.conv && (S.conv.state === 'active' || S.conv.state === 'queued'));
  }
  function typingInput() {
    if (!ui.input) return;
    var v = clean(ui.input.value, 0);
    if (!/\S/.test(v) || !chatting()) return typingStop();
    clearTimeout(typed.idle);
    typed.idle = setTimeout(typingStop, TYPING_IDLE_MS);
    // Without sneak peek there is nothing new to say until the refresh.
    if (!peek && typed.sent && now() - typed.at < TYPING_REFRESH_MS) return;
    if (peek && typed.sent && v === typed.draft) return;
    var wait = typed.at + TYPING_GAP_MS - now();
    if (wait <= 0) return typingSend();
    if (!typed.timer) typed.timer = setTimeout(typingSend, wait);
  }
  function typingSend() {
    clearTimeout(typed.timer);
    typed.timer = null;
    var v = ui.input ? clean(ui.input.value, 0) : '';
    if (!/\S/.test(v) || !chatting() || !T || !S.online) return;
    var m = { t: 'typing', typing: true };
    // 2,000 UTF-16 units are at most 6,000 UTF-8 bytes: within the server's
    // 8 KiB field limit whatever the script.
    if (peek) m.draft = whole(v.slice(0, 2000));
    send(m);
    typed.sent = true;
    typed.at = now();
    typed.draft = v;
  }
  function typingStop() {
    clearTimeout(typed.timer);
    clearTimeout(typed.idle);
    typed.timer = typed.idle = null;
    typed.draft = null;
    if (typed.sent) send({ t: 'typing', typing: false });
    typed.sent = false;
  }
  function showTyping() {
    if (!ui.typing) return;
    var on = !!agentTyping && chatting();
    text(ui.typing, on ? fill(STR.typing, { agent: agentTyping }) : '');
    ui.typing.hidden = !on;
  }
  function pad(n) {
    return (n < 10 ? '0' : '') + n;
  }
  function unplace(id) {
    var n = nodes[id];
    if (n && n.parentNode) n.parentNode.removeChild(n);
    delete nodes[id];
  }
  // Create or update one message's node and keep the list in order.
  function place(m) {
    if (!ui.log) return;
    var n = nodes[m.id], from = m.from || 'visitor', t = new Date(m.at_ms || m.at || now());
    var st = m.failed ? STR.failed + m.failed : m.message == null ? STR.sending : '';
    var cls = 'm ' + from + (m.failed ? ' bad' : m.message == null ? ' wait' : '');
    var who = from === 'system' ? '' : (from === 'agent' ? m.name || '' : STR.you) + ' · ' + pad(t.getHours()) + ':' + pad(t.getMinutes());
    if (!n) {
      n = nodes[m.id] = el('div', cls, { 'data-id': m.id }, [el('div', 'who'), el('div', 'b'), el('div', 's')]);
      n.hfW = n.childNodes[0];
      n.hfB = n.childNodes[1];
      n.hfS = n.childNodes[2];
      if (from === 'system') text(n.hfB, said(m));
      else linkify(n.hfB, m.body || '');
    }
    n.className = cls;
    text(n.hfW, who);
    n.hfW.hidden = !who;
    text(n.hfS, st);
    n.hfS.hidden = !st;
    var file = from !== 'system' && fileMeta(m.attachment);
    if (file) fileNode(file, n);
    // A file alone has no text bubble.
    n.hfB.hidden = !!file && !m.body;
    // The invitation's stand-in line goes once the server has the chat:
    // the chat's own first line then says the same words, in its place.
    if (invLine && m.message != null) {
      if (invLine.parentNode) invLine.parentNode.removeChild(invLine);
      invLine = null;
    }
    var list = ui.log, c = list.firstChild, bottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    while (c && (c === n || c === invLine || order(S.msgs[c.getAttribute('data-id')] || {}, m) <= 0)) c = c.nextSibling;
    if (n.nextSibling !== c || n.parentNode !== list) list.insertBefore(n, c);
    if (bottom || from === 'visitor') list.scrollTop = list.scrollHeight;
  }
  // A system line in the visitor's language; its English body otherwise.
  function said(m) {
    var n = m.notice || {}, k = n.kind, f = n.from;
    if (k === 'transferred') k = f == null ? 'assigned' : f === n.by ? 'handed' : 'moved';
    var s = SYS.hasOwnProperty(k) ? STR[k] : null, ok = true;
    s = s && s.replace(/\{(\w+)\}/g, function (x, name) {
      if (typeof n[name] !== 'string') ok = false;
      return n[name];
    });
    return ok && s ? s : m.body || '';
  }
  // The groups offered, by name: names and keys are the site's words and
  // are only ever text here, never markup.
  function drawGroups() {
    if (!ui.pick) return;
    // Redrawn live as agents come and go: a button with the keyboard's
    // focus keeps it.
    var act = frame ? D.activeElement : root && root.activeElement;
    var had = act && act.parentNode === ui.pick ? act.getAttribute('data-group') : null;
    while (ui.pick.firstChild) ui.pick.removeChild(ui.pick.firstChild);
    if (!S.groups) return;
    ui.pick.appendChild(el('h3', null, { id: 'hf-pick' }, [STR.pickT]));
    each(S.groups, function (g) {
      if (!g || typeof g.key !== 'string' || typeof g.name !== 'string') return;
      var b = el('button', null, { type: 'button', 'data-group': g.key }, [g.name]);
      if (!g.online) b.appendChild(el('span', null, null, [STR.pickAway]));
      listen(b, 'click', function () {
        choose(g.key);
      });
      ui.pick.appendChild(b);
      if (had === g.key) b.focus();
    });
  }
  function status(s) {
    if (!ui.status) return;
    text(ui.status, s || '');
    ui.status.hidden = !s;
  }
  // "You are number 3 in line, about 2 minutes": whole minutes, rounded up.
  function inLine() {
    var q = S.queue;
    if (!q || !(q.n > 0)) return STR.queued;
    var m = Math.ceil(q.ms / 60000);
    var t = q.ms == null ? '' : q.ms < 60000 ? STR.soon : fill(STR.about, { t: fill(m === 1 ? STR.min : STR.mins, { m: m }) });
    return fill(STR.line, { n: q.n }) + t;
  }
  var offlineTimer = null, started = now();
  function setState() {
    if (!ui.top) return;
    var c = S.conv, busy = c && (c.state === 'active' || c.state === 'queued');
    text(ui.sub, !c ? STR.sub : c.state === 'active' && c.agent_name ? STR.active + c.agent_name : c.state === 'queued' ? inLine() : c.state === 'closed' ? STR.closed : STR.sub);
    var ending = false;
    each(outbox(), function (e) {
      if (e.t === 'end_chat') ending = true;
    });
    ui.end.hidden = !busy || ending;
    if (ui.end.hidden) ui.ask.hidden = true;
    // Before the first message of a site that offers a choice, the visitor
    // picks a group (unless the page names one, or it was picked before).
    var picking = !c && !!S.groups && !groupKey() && !chatOpen();
    ui.pick.hidden = !picking;
    var leave = !picking && !S.agents && !busy;
    // The field with the focus may be the one about to hide (the panel was
    // opened before the server said no one is there): the focus moves to
    // the field shown in its place, not off the page.
    var act = frame ? D.activeElement : root && root.activeElement;
    var moveTo = leave && act === ui.input && !ui.compose.hidden ? ui.lmsg : !leave && act === ui.lmsg && !ui.leave.hidden ? ui.input : null;
    ui.leave.hidden = !leave;
    ui.compose.hidden = leave || picking;
    if (moveTo) moveTo.focus();
    if (busy) kick(false);
    // Give a fresh page a moment to connect before crying "offline".
    clearTimeout(offlineTimer);
    if (S.online) status('');
    else if (nav.onLine === false || everOnline || outbox().length || now() - started > 3000) status(STR.offline);
    else {
      status(STR.connecting);
      offlineTimer = setTimeout(setState, 3100);
    }
  }
  function show() {
    if (!ui.top) return;
    ui.panel.hidden = !S.open;
    ui.go.setAttribute('aria-expanded', S.open ? 'true' : 'false');
    var small = win.innerWidth <= 480;
    ui.top.className = 'hf' + (S.open ? ' on' : '') + (small ? ' sm' : '');
    if (frame) {
      frame.style.width = S.open ? small ? '100%' : '410px' : '100px';
      frame.style.height = S.open ? small ? '100%' : Math.min(672, win.innerHeight) + 'px' : '100px';
    }
    if (S.open) ui.log.scrollTop = ui.log.scrollHeight;
  }

  // ------------------------------------------------------------ public API

  // The site's automatic invitation: a card over the launcher. Replying
  // opens the chat with the words in place; closing it tells the server,
  // which counts it as ignored. Neither is stored by the widget: a reload
  // does not bring it back (once a visit).
  var invite = null, invLine = null;
  function showInvite(id, text) {
    if (!text || invite) return;
    var reply = el('button', 'ir', { type: 'button' }, [STR.invReply]);
    var x = el('button', 'ix', { type: 'button', 'aria-label': STR.invClose }, ['×']);
    var card = el('div', 'inv', { role: 'status', id: 'hf-inv' }, [el('div', 'it', null, [text]), el('div', 'ib', null, [reply, x])]);
    invite = { id: id, text: text, card: card };
    ui.top.appendChild(card);
    if (frame && !S.open) {
      frame.style.width = '340px';
      frame.style.height = '260px';
    }
    send({ t: 'invitation', id: id, event: 'shown' });
    listen(reply, 'click', function () {
      hideInvite();
      // Shown as the first line, so the reply reads as an answer to it; the
      // server puts the same words first in the chat once it is answered.
      invLine = el('div', 'm agent inv', null, [el('div', 'b', null, [text])]);
      if (ui.log) ui.log.insertBefore(invLine, ui.log.firstChild);
      api.open();
    });
    listen(x, 'click', function () {
      hideInvite();
      send({ t: 'invitation', id: id, event: 'dismissed' });
      ui.go.focus();
    });
  }
  function hideInvite() {
    if (invite && invite.card.parentNode) invite.card.parentNode.removeChild(invite.card);
    if (frame && !S.open) show();
  }

  var api = {
    version: '1',
    open: function (quiet) {
      S.open = true;
      try {
        if (SS) SS.setItem(NS + 'open', '1');
      } catch (e) { /* ignore */ }
      show();
      if (ui.input && quiet !== true) (ui.compose.hidden ? ui.lmsg : ui.input).focus();
    },
    close: function () {
      var inside = ui.top && (frame ? D.activeElement && D.activeElement !== D.body : root.activeElement);
      S.open = false;
      try {
        if (SS) SS.removeItem(NS + 'open');
      } catch (e) { /* ignore */ }
      show();
      if (inside) ui.go.focus();
    },
    on: function (ev, fn) {
      if (listeners[ev] && typeof fn === 'function') listeners[ev].push(fn);
    },
    // identify({id, name, email, hash, ...custom attributes})
    identify: function (o) {
      if (!o || o.id == null || !clean(o.id, 256)) return;
      current(); // take another tab's reset first
      var attrs = {}, k, v, n = 0;
      for (k in o) {
        if (!o.hasOwnProperty(k) || k === 'id' || k === 'name' || k === 'email' || k === 'hash' || n >= 50) continue;
        v = o[k];
        if (v === null || typeof v === 'boolean' || (typeof v === 'number' && isFinite(v))) attrs[clean(k, 256)] = v;
        else if (typeof v === 'string') attrs[clean(k, 256)] = clean(v, 1024);
        else continue;
        n++;
      }
      S.idn = {
        t: 'identify', id: clean(o.id, 256), name: o.name == null ? null : clean(o.name, 256),
        email: o.email == null ? null : clean(o.email, 256), hash: o.hash == null ? null : clean(o.hash, 128), attrs: attrs
      };
      var proof = { id: S.idn.id, hash: S.idn.hash }, had = proofOf(jget('identity', null));
      // Another user on this browser: the chat here is the previous one's.
      // Start a new visitor; its welcome sends this identify.
      if (had && had.id !== proof.id) return forget(proof, true, 0);
      S.proof = proof;
      jset('identity', proof);
      send(S.idn);
    },
    // A site's logout: forget this browser's chat (token, outbox, cursor,
    // messages, identity) in every tab, and start over as a new anonymous
    // visitor. The conversation stays on the server.
    reset: function () {
      S.idn = null;
      forget(null, true, 0);
    },
    // Where this tab's uploads stand, for diagnostics: name, size, id,
    // state, offset, the offset a resumed upload continued from, the
    // offset of every PATCH sent, and how many requests failed.
    uploads: uploadsState,
    // The pre-load queue: Holdfast.push(['identify', {...}]), ['open'], ...
    push: function (cmd) {
      if (cmd && typeof api[cmd[0]] === 'function' && cmd[0] !== 'push') api[cmd[0]].apply(api, [].slice.call(cmd, 1));
    }
  };
  win.Holdfast = api;

  // ------------------------------------------------------------ start

  mergeLog(logFromStorage());
  each(outbox(), pending);
  try {
    S.open = !!(SS && SS.getItem(NS + 'open'));
  } catch (e) { /* ignore */ }
  if (prior && prior.length) each(prior, api.push);
  connect();
  if (doc.body) mount();
  else listen(doc, 'DOMContentLoaded', mount);
})(window, document);
