// The hub API (docs/hub.md) against a scripted fake WebSocket: the test plays the hub.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import {
  connect,
  Handlers,
  encodeMessage,
  AuthError,
  ClosedError,
  GotalkError,
  RemoteError,
  Subscription,
} from '../gotalk.js';
import { FakeClock, makeWebSocketClass, settle } from '../test-support/fakes.mjs';

const URL_ = 'ws://127.0.0.1:1/gotalk/';
const text = (b) => new TextDecoder().decode(b);
const START = 1_700_000_000_000;

/** A keep-alive connection on a fake socket and clock; the first socket is opened unless `open: false`. */
function setup(options = {}) {
  const WS = makeWebSocketClass();
  const clock = new FakeClock(START);
  const handlers = options.handlers ?? new Handlers();
  const conn = connect(URL_, { WebSocket: WS, timers: clock.timers, handlers, heartbeatInterval: 0, ...options });
  const events = { open: 0, errors: [] };
  conn.on('open', () => events.open++);
  conn.on('error', (e) => events.errors.push(e));
  if (options.open !== false) WS.instances[0].handshake();
  return { WS, clock, conn, handlers, events, ws: () => WS.instances.at(-1) };
}

const seen = new WeakMap();

/** What the client sent on `ws` since the last call: `[kind, op or name, JSON text, id]`. */
function sent(ws) {
  const all = ws.sentMessages();
  const from = seen.get(ws) ?? 0;
  seen.set(ws, all.length);
  return all.slice(from).map((m) => [m.type, m.op ?? m.name, text(m.payload), m.id]);
}

/** The requests sent on `ws` since the last look, as `[op, JSON text]`. */
function requests(ws) {
  return sent(ws).map(([type, op, json]) => (type === 'r' ? [op, json] : [type, op, json]));
}

/** The ID of the last request `op` sent on `ws` (for `channel`, when given). */
function lastId(ws, op, channel) {
  const m = ws
    .sentMessages()
    .findLast(
      (m) =>
        m.type === 'r' && m.op === op && (channel === undefined || JSON.parse(text(m.payload)).channel === channel),
    );
  assert.ok(m, `no "${op}" request sent`);
  return m.id;
}

function reply(ws, op, value, channel) {
  ws.receive(encodeMessage({ type: 'R', id: lastId(ws, op, channel), payload: JSON.stringify(value) }));
}

function refuse(ws, op, message) {
  ws.receive(encodeMessage({ type: 'E', id: lastId(ws, op), payload: message }));
}

function deliver(ws, channel, value) {
  ws.receive(encodeMessage({ type: 'n', name: channel, payload: JSON.stringify(value) }));
}

const pub = (offset, data, epoch = 'e1') => ({ offset, epoch, data, info: { user: 'u', client: 'c1' } });

/** A handler that records what it gets. */
function recorder() {
  const got = [];
  const fn = (d) => void got.push(d);
  fn.got = got;
  fn.data = () => got.map((d) => ('offset' in d ? d.data : d));
  return fn;
}

describe('subscribe', () => {
  test('sends the subscribe request and delivers its publications, then live ones, in order', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const sub = conn.subscribe('chat:lobby', h, { presence: true, events: true });
    assert.ok(sub instanceof Subscription);
    assert.equal(sub.state, 'subscribing');
    assert.deepEqual(requests(ws()), [['subscribe', '{"channel":"chat:lobby","presence":true,"events":true}']]);

    const result = { offset: 2, epoch: 'e1', recovered: true, publications: [pub(1, 'a'), pub(2, 'b')] };
    reply(ws(), 'subscribe', result);
    assert.deepEqual(await sub.ready, result);
    assert.equal(sub.state, 'subscribed');
    deliver(ws(), 'chat:lobby', pub(3, 'c'));
    deliver(ws(), 'chat:lobby', { join: { user: 'bob', client: 'c2' } });
    deliver(ws(), 'chat:lobby', { leave: { user: 'bob', client: 'c2' } });
    assert.deepEqual(h.data(), [
      'a',
      'b',
      'c',
      { join: { user: 'bob', client: 'c2' } },
      { leave: { user: 'bob', client: 'c2' } },
    ]);
    assert.deepEqual(h.got[0], pub(1, 'a'), 'a publication arrives whole: offset, epoch, data, info');
    assert.deepEqual(sub.position, { offset: 3, epoch: 'e1' });
    assert.equal(conn.getSubscription('chat:lobby'), sub);
    assert.deepEqual(conn.subscriptions, [sub]);
    conn.close();
  });

  test('options are only sent when set; without publications the position is the channel position', async () => {
    const { conn, ws } = setup();
    const sub = conn.subscribe('news', () => {});
    assert.deepEqual(requests(ws()), [['subscribe', '{"channel":"news"}']]);
    reply(ws(), 'subscribe', { offset: 41, epoch: 'e9', recovered: true, publications: [] });
    await sub.ready;
    assert.deepEqual(sub.position, { offset: 41, epoch: 'e9' });
    conn.close();
  });

  test('publications delivered twice (result and live, or live twice) reach the handler once', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const sub = conn.subscribe('c', h);
    // The hub sends live deliveries before the subscribe result; they wait for it.
    deliver(ws(), 'c', pub(3, 'three'));
    deliver(ws(), 'c', pub(4, 'four'));
    assert.deepEqual(h.got, [], 'nothing before the subscribe result');
    reply(ws(), 'subscribe', {
      offset: 3,
      epoch: 'e1',
      recovered: true,
      publications: [pub(2, 'two'), pub(3, 'three')],
    });
    await sub.ready;
    deliver(ws(), 'c', pub(4, 'four'));
    deliver(ws(), 'c', pub(2, 'two'));
    deliver(ws(), 'c', pub(5, 'five'));
    assert.deepEqual(h.data(), ['two', 'three', 'four', 'five']);
    assert.deepEqual(sub.position, { offset: 5, epoch: 'e1' });
    conn.close();
  });

  test('since: sent as is; publications at or before it are not delivered again', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const sub = conn.subscribe('c', h, { since: { offset: 7, epoch: 'e1' } });
    assert.deepEqual(sub.position, { offset: 7, epoch: 'e1' });
    assert.deepEqual(requests(ws()), [['subscribe', '{"channel":"c","since":{"offset":7,"epoch":"e1"}}']]);
    reply(ws(), 'subscribe', {
      offset: 9,
      epoch: 'e1',
      recovered: true,
      publications: [pub(7, 'x'), pub(8, 'y'), pub(9, 'z')],
    });
    await sub.ready;
    assert.deepEqual(h.data(), ['y', 'z']);
    conn.close();
  });

  test('subscribing before the connection opens sends subscribe first, then what was queued', async () => {
    const { conn, ws, events } = setup({ open: false });
    const sub = conn.subscribe('c', () => {});
    const published = conn.publish('c', 1);
    ws().handshake();
    assert.equal(events.open, 1);
    assert.deepEqual(requests(ws()), [
      ['subscribe', '{"channel":"c"}'],
      ['publish', '{"channel":"c","data":1}'],
    ]);
    reply(ws(), 'publish', { offset: 1, epoch: 'e' });
    assert.deepEqual(await published, { offset: 1, epoch: 'e' });
    assert.equal(sub.state, 'subscribing');
    conn.close();
  });

  test('a refused subscription rejects ready, tells the handler, and can be made again', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const ended = [];
    const sub = conn.subscribe('secret', h).on('unsubscribed', (r) => ended.push(r));
    refuse(ws(), 'subscribe', 'forbidden: read access to "secret"');
    const err = await sub.ready.then(
      () => assert.fail('resolved'),
      (e) => e,
    );
    assert.ok(err instanceof RemoteError);
    assert.equal(err.message, 'forbidden: read access to "secret"');
    assert.deepEqual(h.got, [{ unsubscribed: 'forbidden: read access to "secret"' }]);
    assert.deepEqual(ended, ['forbidden: read access to "secret"']);
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(conn.getSubscription('secret'), null);
    const again = conn.subscribe('secret', () => {});
    assert.notEqual(again, sub);
    conn.close();
  });

  test('one subscription per channel; bad arguments throw', () => {
    const { conn } = setup();
    conn.subscribe('c', () => {});
    assert.throws(
      () => conn.subscribe('c', () => {}),
      (e) => e instanceof GotalkError && /already subscribed/.test(e.message),
    );
    assert.throws(() => conn.subscribe('', () => {}), TypeError);
    assert.throws(() => conn.subscribe(7, () => {}), TypeError);
    assert.throws(() => conn.subscribe('d'), TypeError);
    assert.throws(() => conn.subscribe('d', () => {}, { since: { offset: -1, epoch: 'e' } }), TypeError);
    assert.throws(() => conn.subscribe('d', () => {}, { since: { offset: 1 } }), TypeError);
    conn.close();
    assert.throws(() => conn.subscribe('e', () => {}), ClosedError);
  });

  test('a throwing handler is reported on the error event and deliveries go on', async () => {
    const { conn, ws, events } = setup();
    const got = [];
    conn.subscribe('c', (p) => {
      got.push(p.offset);
      if (p.offset === 1) throw new Error('handler bug');
    });
    reply(ws(), 'subscribe', { offset: 0, epoch: 'e1', recovered: true, publications: [] });
    await settle();
    deliver(ws(), 'c', pub(1));
    deliver(ws(), 'c', pub(2));
    assert.deepEqual(got, [1, 2]);
    assert.deepEqual(
      events.errors.map((e) => e.message),
      ['handler bug'],
    );
    conn.close();
  });
});

describe('hub notifications', () => {
  test('{"lost": position}: the handler is told and deliveries carry on from that position', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const lost = [];
    const sub = conn.subscribe('c', h).on('lost', (p) => lost.push(p));
    reply(ws(), 'subscribe', { offset: 4, epoch: 'e1', recovered: true, publications: [] });
    await sub.ready;
    deliver(ws(), 'c', { lost: { offset: 9, epoch: 'e2' } });
    deliver(ws(), 'c', pub(9, 'old', 'e2'));
    deliver(ws(), 'c', pub(10, 'new', 'e2'));
    assert.deepEqual(h.data(), [{ lost: { offset: 9, epoch: 'e2' } }, 'new']);
    assert.deepEqual(lost, [{ offset: 9, epoch: 'e2' }]);
    assert.deepEqual(sub.position, { offset: 10, epoch: 'e2' });
    conn.close();
  });

  test('{"unsubscribed": reason}: the subscription ends and is not renewed after a reconnect', async () => {
    const { conn, ws, clock } = setup();
    const h = recorder();
    const sub = conn.subscribe('c', h);
    reply(ws(), 'subscribe', { offset: 0, epoch: 'e1', recovered: true, publications: [] });
    await sub.ready;
    deliver(ws(), 'c', { unsubscribed: 'kicked by moderator' });
    deliver(ws(), 'c', pub(1, 'after'));
    assert.deepEqual(h.got, [{ unsubscribed: 'kicked by moderator' }]);
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(conn.subscriptions, []);
    ws().drop();
    clock.advance(500);
    ws().handshake();
    assert.deepEqual(requests(ws()), [], 'nothing to resubscribe');
    conn.close();
  });

  test('notifications for channels without a subscription still reach the notification handlers', async () => {
    const plain = [];
    const handlers = new Handlers().handleNotification('c', (v) => plain.push(v));
    const { conn, ws } = setup({ handlers });
    deliver(ws(), 'c', pub(1, 'plain'));
    const h = recorder();
    const sub = conn.subscribe('c', h);
    reply(ws(), 'subscribe', { offset: 1, epoch: 'e1', recovered: true, publications: [] });
    await sub.ready;
    deliver(ws(), 'c', pub(2, 'subscribed'));
    assert.deepEqual(
      plain.map((p) => p.data),
      ['plain'],
      'a subscribed channel goes to its subscription only',
    );
    assert.deepEqual(h.data(), ['subscribed']);
    conn.close();
  });
});

describe('unsubscribe', () => {
  test('sends unsubscribe and stops deliveries at once', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const sub = conn.subscribe('c', h);
    reply(ws(), 'subscribe', { offset: 0, epoch: 'e1', recovered: true, publications: [] });
    await sub.ready;
    requests(ws());
    const done = sub.unsubscribe();
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(requests(ws()), [['unsubscribe', '{"channel":"c"}']]);
    deliver(ws(), 'c', pub(1));
    reply(ws(), 'unsubscribe', {});
    assert.equal(await done, undefined);
    assert.deepEqual(h.got, [], 'no delivery after unsubscribe(), and no { unsubscribed }');
    assert.equal(await sub.unsubscribe(), undefined, 'a second call does nothing');
    assert.deepEqual(requests(ws()), []);
    conn.close();
  });

  test('before the subscribe result: ready rejects and a late result is ignored', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const sub = conn.subscribe('c', h);
    sub.unsubscribe();
    await assert.rejects(sub.ready, /subscription to "c" ended: unsubscribe\(\)/);
    reply(ws(), 'subscribe', { offset: 1, epoch: 'e1', recovered: true, publications: [pub(1)] });
    await settle();
    assert.deepEqual(h.got, []);
    conn.close();
  });

  test('while disconnected: nothing is sent, and it is not resubscribed', async () => {
    const { conn, ws, clock } = setup();
    const sub = conn.subscribe('c', () => {});
    reply(ws(), 'subscribe', { offset: 0, epoch: 'e1', recovered: true, publications: [] });
    await sub.ready;
    ws().drop();
    await sub.unsubscribe();
    clock.advance(500);
    ws().handshake();
    assert.deepEqual(requests(ws()), []);
    conn.close();
  });
});

describe('publish, presence, history', () => {
  test('exact JSON on the wire and the results', async () => {
    const { conn, ws } = setup();
    const p1 = conn.publish('chat:lobby', { text: 'hi' }, { others: true });
    const p2 = conn.publish('chat:lobby', 'plain');
    const p3 = conn.publish('chat:lobby');
    const pr = conn.presence('chat:lobby');
    const h1 = conn.history('chat:lobby', { since: { offset: 3, epoch: 'e1' }, limit: 10 });
    const h2 = conn.history('chat:lobby');
    const h3 = conn.history('chat:lobby', { limit: 0 });
    assert.deepEqual(requests(ws()), [
      ['publish', '{"channel":"chat:lobby","data":{"text":"hi"},"others":true}'],
      ['publish', '{"channel":"chat:lobby","data":"plain"}'],
      ['publish', '{"channel":"chat:lobby","data":null}'],
      ['presence', '{"channel":"chat:lobby"}'],
      ['history', '{"channel":"chat:lobby","since":{"offset":3,"epoch":"e1"},"limit":10}'],
      ['history', '{"channel":"chat:lobby"}'],
      ['history', '{"channel":"chat:lobby","limit":0}'],
    ]);
    const ids = ws()
      .sentMessages()
      .map((m) => m.id);
    const answer = (i, v) => ws().receive(encodeMessage({ type: 'R', id: ids[i], payload: JSON.stringify(v) }));
    answer(0, { offset: 8, epoch: 'e1' });
    answer(3, { clients: [{ user: 'u', client: 'c1' }] });
    const hist = { publications: [pub(4, 'x')], offset: 8, epoch: 'e1', complete: true };
    answer(4, hist);
    assert.deepEqual(await p1, { offset: 8, epoch: 'e1' });
    assert.deepEqual(await pr, { clients: [{ user: 'u', client: 'c1' }] });
    assert.deepEqual(await h1, hist);
    ws().receive(encodeMessage({ type: 'E', id: ids[1], payload: 'forbidden: write access to "chat:lobby"' }));
    await assert.rejects(
      p2,
      (e) => e instanceof RemoteError && e.message === 'forbidden: write access to "chat:lobby"',
    );
    conn.close();
    await assert.rejects(p3, ClosedError);
    await assert.rejects(h2, ClosedError);
    await assert.rejects(h3, ClosedError);
  });

  test('the subscription methods are the same requests on its channel', async () => {
    const { conn, ws } = setup();
    const sub = conn.subscribe('room', () => {});
    requests(ws());
    sub.publish([1, 2], { others: true }).catch(() => {});
    sub.presence().catch(() => {});
    sub.history({ limit: 5 }).catch(() => {});
    assert.deepEqual(requests(ws()), [
      ['publish', '{"channel":"room","data":[1,2],"others":true}'],
      ['presence', '{"channel":"room"}'],
      ['history', '{"channel":"room","limit":5}'],
    ]);
    conn.close();
  });

  test('bad arguments reject without sending anything', async () => {
    const { conn, ws } = setup();
    await assert.rejects(conn.publish('', 1), TypeError);
    await assert.rejects(conn.presence(null), TypeError);
    await assert.rejects(conn.history('c', { limit: -1 }), TypeError);
    await assert.rejects(conn.history('c', { limit: 1.5 }), TypeError);
    await assert.rejects(conn.history('c', { since: { offset: 1, epoch: 2 } }), TypeError);
    assert.deepEqual(requests(ws()), []);
    conn.close();
  });

  test('sent while disconnected: queued and sent after reconnecting', async () => {
    const { conn, ws, clock } = setup();
    ws().drop();
    const p = conn.publish('c', 'later');
    assert.equal(conn.queuedMessages, 1);
    clock.advance(500);
    ws().handshake();
    assert.deepEqual(requests(ws()), [['publish', '{"channel":"c","data":"later"}']]);
    reply(ws(), 'publish', { offset: 1, epoch: 'e' });
    assert.deepEqual(await p, { offset: 1, epoch: 'e' });
    conn.close();
  });
});

describe('reconnect and resume', () => {
  test('every live subscription is sent again from its last position; nothing is delivered twice', async () => {
    const { conn, ws, clock, events } = setup();
    const a = recorder();
    const b = recorder();
    const subA = conn.subscribe('a', a, { presence: true });
    const subB = conn.subscribe('b', b);
    reply(ws(), 'subscribe', { offset: 5, epoch: 'e1', recovered: true, publications: [pub(5, 'a5')] }, 'a');
    await settle();
    deliver(ws(), 'a', pub(6, 'a6'));
    // b's result never came: its subscribe was in flight when the socket dropped.
    ws().drop();
    assert.equal(subA.state, 'subscribed');
    clock.advance(500);
    ws().handshake();
    assert.equal(events.open, 2);
    assert.deepEqual(requests(ws()), [
      ['subscribe', '{"channel":"a","since":{"offset":6,"epoch":"e1"},"presence":true}'],
      ['subscribe', '{"channel":"b"}'],
    ]);
    assert.equal(subA.state, 'subscribing');
    const ids = ws()
      .sentMessages()
      .map((m) => m.id);
    ws().receive(
      encodeMessage({
        type: 'R',
        id: ids[0],
        payload: JSON.stringify({
          offset: 8,
          epoch: 'e1',
          recovered: true,
          publications: [pub(7, 'a7'), pub(8, 'a8')],
        }),
      }),
    );
    ws().receive(
      encodeMessage({
        type: 'R',
        id: ids[1],
        payload: JSON.stringify({ offset: 2, epoch: 'e1', recovered: true, publications: [] }),
      }),
    );
    await subB.ready;
    deliver(ws(), 'a', pub(8, 'a8'));
    deliver(ws(), 'a', pub(9, 'a9'));
    deliver(ws(), 'b', pub(3, 'b3'));
    assert.deepEqual(a.data(), ['a5', 'a6', 'a7', 'a8', 'a9']);
    assert.deepEqual(b.data(), ['b3']);
    assert.deepEqual(subA.position, { offset: 9, epoch: 'e1' });
    conn.close();
  });

  test('recovered: false reaches the handler as { lost } and the lost event, then live deliveries go on', async () => {
    const { conn, ws, clock } = setup();
    const h = recorder();
    const lost = [];
    const sub = conn.subscribe('c', h).on('lost', (p) => lost.push(p));
    reply(ws(), 'subscribe', { offset: 3, epoch: 'e1', recovered: true, publications: [] });
    await sub.ready;
    ws().drop();
    clock.advance(500);
    ws().handshake();
    assert.deepEqual(requests(ws()), [['subscribe', '{"channel":"c","since":{"offset":3,"epoch":"e1"}}']]);
    reply(ws(), 'subscribe', { offset: 12, epoch: 'e2', recovered: false, publications: [] });
    await settle();
    deliver(ws(), 'c', pub(13, 'fresh', 'e2'));
    assert.deepEqual(h.data(), [{ lost: { offset: 12, epoch: 'e2' } }, 'fresh']);
    assert.deepEqual(lost, [{ offset: 12, epoch: 'e2' }]);
    assert.deepEqual(sub.position, { offset: 13, epoch: 'e2' });
    conn.close();
  });

  test('an initial since that cannot be recovered is reported the same way', async () => {
    const { conn, ws } = setup();
    const h = recorder();
    const sub = conn.subscribe('c', h, { since: { offset: 1, epoch: 'gone' } });
    reply(ws(), 'subscribe', { offset: 4, epoch: 'e3', recovered: false, publications: [] });
    await sub.ready;
    assert.deepEqual(h.got, [{ lost: { offset: 4, epoch: 'e3' } }]);
    conn.close();
  });

  test('a resubscription the hub refuses ends the subscription with { unsubscribed }', async () => {
    const { conn, ws, clock } = setup();
    const h = recorder();
    const sub = conn.subscribe('c', h);
    reply(ws(), 'subscribe', { offset: 0, epoch: 'e1', recovered: true, publications: [] });
    await sub.ready;
    ws().drop();
    clock.advance(500);
    ws().handshake();
    refuse(ws(), 'subscribe', 'forbidden: read access to "c"');
    await settle();
    assert.deepEqual(h.got, [{ unsubscribed: 'forbidden: read access to "c"' }]);
    assert.equal(sub.state, 'unsubscribed');
    conn.close();
  });

  test('close() ends every subscription quietly; a pending ready rejects with ClosedError', async () => {
    const { conn } = setup();
    const h = recorder();
    const ended = [];
    const sub = conn.subscribe('c', h).on('unsubscribed', (r) => ended.push(r));
    conn.close();
    await assert.rejects(sub.ready, ClosedError);
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(ended, ['connection closed']);
    assert.deepEqual(h.got, []);
    assert.deepEqual(conn.subscriptions, []);
  });
});

describe('token provider and auth', () => {
  /** A provider handing out t1, t2, … and counting its calls. */
  function provider() {
    const fn = async (conn) => {
      fn.calls.push(conn);
      return `t${fn.calls.length}`;
    };
    fn.calls = [];
    return fn;
  }

  test('auth goes first on every connect, with a fresh token; the rest waits for its result', async () => {
    const token = provider();
    const { conn, ws, clock, events } = setup({ token, open: false });
    const h = recorder();
    const sub = conn.subscribe('c', h);
    const queued = conn.publish('c', 'hello');
    ws().handshake();
    await settle();
    assert.equal(token.calls.length, 1);
    assert.equal(token.calls[0], conn, 'the provider gets the connection');
    assert.equal(conn.state, 'authenticating');
    assert.equal(events.open, 0);
    const during = conn.publish('c', 'while authenticating');
    conn.subscribe('d', () => {});
    conn.notify('note', 1);
    assert.deepEqual(requests(ws()), [['auth', '{"token":"t1"}']], 'only auth before its result');

    reply(ws(), 'auth', { user: 'alice', client: 'c1', expires: null });
    await settle();
    assert.equal(conn.state, 'open');
    assert.equal(events.open, 1);
    assert.deepEqual(conn.identity, { user: 'alice', client: 'c1', expires: null });
    assert.deepEqual(requests(ws()), [
      ['subscribe', '{"channel":"c"}'],
      ['subscribe', '{"channel":"d"}'],
      ['publish', '{"channel":"c","data":"hello"}'],
      ['publish', '{"channel":"c","data":"while authenticating"}'],
      ['n', 'note', '1'],
    ]);
    reply(ws(), 'subscribe', { offset: 2, epoch: 'e1', recovered: true, publications: [pub(2, 'two')] }, 'c');
    reply(ws(), 'publish', { offset: 3, epoch: 'e1' });
    await during;
    conn.getSubscription('d').unsubscribe();

    ws().drop();
    await assert.rejects(queued, ClosedError, 'in flight when the socket dropped');
    assert.equal(conn.identity, null);
    clock.advance(500);
    ws().handshake();
    await settle();
    assert.equal(token.calls.length, 2, 'called again on reconnect');
    assert.deepEqual(requests(ws()), [['auth', '{"token":"t2"}']], 'the refreshed token, first');
    reply(ws(), 'auth', { user: 'alice', client: 'c2', expires: null });
    await settle();
    assert.deepEqual(requests(ws()), [['subscribe', '{"channel":"c","since":{"offset":2,"epoch":"e1"}}']]);
    assert.equal(sub.state, 'subscribing');
    conn.close();
  });

  test('a refused auth is an error event and nothing else is sent; authenticate() retries', async () => {
    const token = provider();
    const { conn, ws, clock, events } = setup({ token, open: false });
    const h = recorder();
    conn.subscribe('c', h);
    const queued = conn.publish('c', 'x');
    ws().handshake();
    await settle();
    refuse(ws(), 'auth', 'token expired');
    await settle();
    assert.equal(events.errors.length, 1);
    const err = events.errors[0];
    assert.ok(err instanceof AuthError);
    assert.equal(err.isAuthError, true);
    assert.match(err.message, /authentication failed: token expired/);
    assert.ok(err.cause instanceof RemoteError);
    assert.equal(conn.state, 'authenticating');
    clock.advance(60_000);
    assert.deepEqual(requests(ws()), [['auth', '{"token":"t1"}']], 'nothing but the auth');
    assert.equal(conn.queuedMessages, 1);
    assert.equal(events.open, 0);

    const retried = conn.authenticate();
    await settle();
    assert.deepEqual(requests(ws()), [['auth', '{"token":"t2"}']]);
    reply(ws(), 'auth', { user: 'alice', client: 'c1', expires: null });
    assert.deepEqual(await retried, { user: 'alice', client: 'c1', expires: null });
    assert.equal(conn.state, 'open');
    assert.deepEqual(requests(ws()), [
      ['subscribe', '{"channel":"c"}'],
      ['publish', '{"channel":"c","data":"x"}'],
    ]);
    assert.equal(events.errors.length, 1, 'an explicit authenticate() rejects instead');
    conn.close();
    await assert.rejects(queued, ClosedError);
  });

  test('a failing token provider is an AuthError event and nothing is sent', async () => {
    const { conn, ws, events } = setup({
      open: false,
      token: () => Promise.reject(new Error('login required')),
    });
    conn.publish('c', 1).catch(() => {});
    ws().handshake();
    await settle();
    assert.equal(events.errors.length, 1);
    assert.ok(events.errors[0] instanceof AuthError);
    assert.match(events.errors[0].message, /token provider failed: login required/);
    assert.deepEqual(requests(ws()), []);
    assert.equal(conn.state, 'authenticating');
    conn.close();
  });

  test('an explicit authenticate() that is refused rejects, without an error event', async () => {
    const { conn, ws, events } = setup({ open: false, token: 'static' });
    ws().handshake();
    await settle();
    assert.deepEqual(requests(ws()), [['auth', '{"token":"static"}']]);
    reply(ws(), 'auth', { user: 'u', client: 'c', expires: null });
    await settle();
    const refresh = conn.authenticate('other-token');
    assert.deepEqual(requests(ws()), [['auth', '{"token":"other-token"}']], 'sent at once on an open connection');
    refuse(ws(), 'auth', 'invalid token: wrong user');
    await assert.rejects(refresh, (e) => e instanceof AuthError && /wrong user/.test(e.message));
    assert.equal(events.errors.length, 0);
    assert.equal(conn.state, 'open', 'a failed refresh leaves the connection as it was');
    conn.close();
    await assert.rejects(conn.authenticate(), ClosedError);
  });

  test('a provider returning null connects without auth', async () => {
    const { conn, ws, events } = setup({ open: false, token: () => null });
    const p = conn.publish('c', 1);
    ws().handshake();
    await settle();
    assert.equal(conn.state, 'open');
    assert.equal(events.open, 1);
    assert.deepEqual(requests(ws()), [['publish', '{"channel":"c","data":1}']]);
    conn.close();
    await assert.rejects(p, ClosedError);
  });

  test('without a provider nothing changes: no auth, open at once, authenticate() needs a token', async () => {
    const { conn, ws, events } = setup();
    assert.equal(conn.state, 'open');
    assert.equal(events.open, 1);
    assert.deepEqual(requests(ws()), []);
    await assert.rejects(conn.authenticate(), TypeError);
    conn.close();
  });

  test('the token is refreshed tokenRefreshMargin before it expires, and only while it moves on', async () => {
    const token = provider();
    const { conn, ws, clock } = setup({ token, open: false });
    ws().handshake();
    await settle();
    requests(ws());
    const expires = START / 1000 + 120;
    reply(ws(), 'auth', { user: 'u', client: 'c', expires });
    await settle();
    clock.advance(89_999);
    await settle();
    assert.equal(token.calls.length, 1);
    clock.advance(1);
    await settle();
    assert.equal(token.calls.length, 2, 'refreshed 30 s before expiry');
    assert.deepEqual(requests(ws()), [['auth', '{"token":"t2"}']]);
    reply(ws(), 'auth', { user: 'u', client: 'c', expires: expires + 3600 });
    await settle();
    assert.deepEqual(conn.identity, { user: 'u', client: 'c', expires: expires + 3600 });
    clock.advance(3600_000 - 1);
    await settle();
    assert.equal(token.calls.length, 2);
    clock.advance(1);
    await settle();
    assert.equal(token.calls.length, 3);
    // The hub extended nothing: no further refresh (it would loop).
    reply(ws(), 'auth', { user: 'u', client: 'c', expires: expires + 3600 });
    await settle();
    clock.advance(24 * 3600_000);
    await settle();
    assert.equal(token.calls.length, 3);
    conn.close();
  });

  test('a token valid for months is refreshed on time, not at once (timers cap at 2^31 - 1 ms)', async () => {
    const token = provider();
    const { conn, ws, clock } = setup({ token, open: false });
    ws().handshake();
    await settle();
    const days = 90;
    reply(ws(), 'auth', { user: 'u', client: 'c', expires: START / 1000 + days * 86_400 });
    await settle();
    assert.deepEqual(clock.pendingDelays, [2 ** 31 - 1]);
    clock.advance(days * 86_400_000 - 30_001);
    await settle();
    assert.equal(token.calls.length, 1);
    clock.advance(1);
    await settle();
    assert.equal(token.calls.length, 2);
    conn.close();
  });

  test('tokenRefreshMargin: false turns the refresh off; a drop cancels it', async () => {
    const token = provider();
    const a = setup({ token, open: false, tokenRefreshMargin: false });
    a.ws().handshake();
    await settle();
    reply(a.ws(), 'auth', { user: 'u', client: 'c', expires: START / 1000 + 60 });
    await settle();
    a.clock.advance(120_000);
    await settle();
    assert.equal(token.calls.length, 1);
    a.conn.close();

    const token2 = provider();
    const b = setup({ token: token2, open: false, reconnectDelay: 3_600_000, maxReconnectDelay: 3_600_000 });
    b.ws().handshake();
    await settle();
    reply(b.ws(), 'auth', { user: 'u', client: 'c', expires: START / 1000 + 60 });
    await settle();
    b.ws().drop();
    b.clock.advance(120_000);
    await settle();
    assert.equal(token2.calls.length, 1, 'no refresh on a dropped socket');
    b.conn.close();
  });

  test('an auth in flight when the socket drops is dropped too; the next socket authenticates anew', async () => {
    const token = provider();
    const { conn, ws, clock, events } = setup({ token, open: false });
    ws().handshake();
    await settle();
    ws().drop();
    await settle();
    assert.equal(events.errors.length, 0, 'a dropped socket is no auth failure');
    clock.advance(500);
    ws().handshake();
    await settle();
    assert.deepEqual(requests(ws()), [['auth', '{"token":"t2"}']]);
    conn.close();
  });

  test('options.token must be a string or a function', () => {
    assert.throws(() => connect(URL_, { WebSocket: makeWebSocketClass(), token: 42 }), TypeError);
  });
});
