// End-to-end: the hub API of gotalk.js against the real `gotalk serve --hub --ws` (the binary of
// crates/cli, see test-support/gotalk-server.mjs), over the platform WebSocket client. Like
// e2e.test.mjs, on Node 20 this file re-runs itself with --experimental-websocket. Without a
// built binary it is skipped with a message, or fails when CI=true.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { fileURLToPath } from 'node:url';

import { connect, Handlers, AuthError, RemoteError } from '../gotalk.js';
import { findGotalk, checkServeOptions, startGotalk } from '../test-support/gotalk-server.mjs';

const CHILD_ENV = 'GOTALK_JS_HUB_E2E_CHILD';
const SECRET = 'hub-e2e-secret';
const HUB = ['--hub', '--history', '100', '--heartbeat', 'off'];
const gotalk = findGotalk();

async function waitFor(fn, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** An HS256 JWT, as `gotalk serve --jwt-secret` verifies them. */
function jwt(claims, secret = SECRET) {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);
const CHAT = { 'chat:*': ['read', 'write', 'presence'] };

/**
 * A WebSocket class whose connection attempts fail while `gate.offline` is true, so a test decides
 * how long a connection stays away.
 */
function gated() {
  const gate = { offline: false };
  gate.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      if (gate.offline) throw new Error('offline (test)');
      super(url, protocols);
    }
  };
  return gate;
}

/** Drops the connection's socket, as a network failure would, and keeps it away until `gate.offline` is false. */
async function forceDisconnect(conn, gate) {
  gate.offline = true;
  const closed = new Promise((resolve) => conn.once('close', resolve));
  conn.ws.close();
  await closed;
  assert.equal(conn.state, 'reconnecting');
}

/** What a subscription's handler got, and its `subscribed` results. */
function subscribe(conn, channel, options) {
  const got = [];
  const results = [];
  const sub = conn.subscribe(channel, (d) => got.push(d), options);
  sub.on('subscribed', (r) => results.push(r));
  const publications = () => got.filter((d) => 'offset' in d);
  return { sub, got, results, publications };
}

if (gotalk.missing) {
  test('hub end to end against gotalk serve --hub', (t) => {
    assert.notEqual(process.env.CI, 'true', `CI must run the hub end-to-end test: ${gotalk.missing}`);
    t.skip(gotalk.missing);
  });
} else if (typeof globalThis.WebSocket === 'undefined') {
  test('hub end to end against gotalk serve --hub (child process with --experimental-websocket)', () => {
    assert.equal(process.env[CHILD_ENV], undefined, 'the child has no WebSocket even with the flag');
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const args = ['--experimental-websocket', '--test', '--test-reporter=tap', fileURLToPath(import.meta.url)];
    const r = spawnSync(process.execPath, args, {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...env, [CHILD_ENV]: '1' },
    });
    const summary = (r.stdout.match(/^# (tests|pass|fail|skipped) \d+$/gm) ?? []).join(', ');
    assert.equal(r.status, 0, `child failed (${summary}):\n${r.stdout}\n${r.stderr}`);
    assert.match(summary, /# fail 0/);
    assert.match(summary, /# skipped 0/);
    assert.doesNotMatch(summary, /# tests 0\b/);
  });
} else {
  checkServeOptions(gotalk.bin, ['--hub', '--history', '--jwt-secret']);
  const conns = [];
  const servers = [];
  const open = (url, options = {}) => {
    const c = connect(url, { handlers: new Handlers(), heartbeatInterval: 0, reconnectDelay: 20, ...options });
    conns.push(c);
    return c;
  };
  const serve = async (args) => {
    const s = await startGotalk(gotalk.bin, args);
    servers.push(s);
    return s;
  };
  after(async () => {
    for (const c of conns) c.close();
    for (const s of servers) await s.stop();
  });

  describe('gotalk serve --hub (no auth)', () => {
    let url;
    before(async () => {
      ({ url } = await serve([...HUB, '--ws', '127.0.0.1:0']));
    });

    test('subscribe, publish, presence, history and unsubscribe between two connections', async () => {
      const a = open(url);
      const b = open(url);
      const as = subscribe(a, 'chat:lobby', { presence: true, events: true });
      await as.sub.ready;
      const bs = subscribe(b, 'chat:lobby', { presence: true, events: true });
      const first = await bs.sub.ready;
      assert.deepEqual(first.publications, [], 'a first subscribe without since replays nothing');

      // Both are in the presence; each saw its own join, `a` also `b`'s.
      const { clients } = await a.presence('chat:lobby');
      assert.equal(clients.length, 2);
      await waitFor(() => as.got.length === 2, 'a sees both joins');
      const [aId, bId] = as.got.map((d) => d.join.client);
      assert.deepEqual(clients.map((c) => c.client).sort(), [aId, bId].sort());
      assert.deepEqual(as.got, [{ join: { user: '', client: aId } }, { join: { user: '', client: bId } }]);

      const p1 = await a.publish('chat:lobby', { text: 'hi' });
      assert.equal(p1.offset, 1);
      assert.equal(typeof p1.epoch, 'string');
      // `others`: not delivered to the publisher.
      await bs.sub.publish({ text: 'hello' }, { others: true });
      await a.publish('chat:lobby', { text: 'bye' });
      await waitFor(() => as.publications().length === 3, 'a gets all three');
      await waitFor(() => bs.publications().length === 2, 'b gets two');
      const texts = (s) => s.publications().map((p) => [p.offset, p.data.text, p.info.client]);
      assert.deepEqual(texts(as), [
        [1, 'hi', aId],
        [2, 'hello', bId],
        [3, 'bye', aId],
      ]);
      assert.deepEqual(texts(bs), [
        [1, 'hi', aId],
        [3, 'bye', aId],
      ]);
      assert.deepEqual(as.sub.position, { offset: 3, epoch: p1.epoch });

      const all = await b.history('chat:lobby', { limit: 10 });
      assert.deepEqual(all.publications.map((p) => p.data.text), ['hi', 'hello', 'bye']);
      assert.deepEqual([all.offset, all.epoch], [3, p1.epoch]);
      const after1 = await b.history('chat:lobby', { since: p1 });
      assert.deepEqual(after1.publications.map((p) => p.offset), [2, 3]);
      assert.equal(after1.complete, true);

      // Leaving: `a` sees `b` go; unsubscribing leaves the presence.
      b.close();
      await waitFor(() => as.got.some((d) => d.leave), 'a sees b leave');
      assert.deepEqual(as.got.at(-1), { leave: { user: '', client: bId } });
      await as.sub.unsubscribe();
      assert.equal(as.sub.state, 'unsubscribed');
      assert.deepEqual((await a.presence('chat:lobby')).clients, []);
      assert.equal(a.getSubscription('chat:lobby'), null);
    });

    test('after a forced reconnect the subscription resumes: every publication once, in order', async () => {
      const gate = gated();
      const a = open(url, { WebSocket: gate.WebSocket, maxReconnectDelay: 100 });
      const publisher = open(url);
      const as = subscribe(a, 'news:resume');
      await as.sub.ready;
      for (let i = 1; i <= 3; i++) await publisher.publish('news:resume', i);
      await waitFor(() => as.publications().length === 3, 'the first three');

      await forceDisconnect(a, gate);
      for (let i = 4; i <= 6; i++) await publisher.publish('news:resume', i);
      // Published while away, and queued by `a` itself until it is back.
      const queued = a.publish('news:resume', 7);
      assert.equal(as.publications().length, 3, 'nothing arrives while disconnected');
      gate.offline = false;
      await a.whenOpen();
      assert.equal((await queued).offset, 7);
      await waitFor(() => as.publications().length === 7, 'all seven');
      for (let i = 8; i <= 9; i++) await publisher.publish('news:resume', i);
      await waitFor(() => as.publications().length === 9, 'the live ones after it');

      assert.deepEqual(
        as.got.map((p) => [p.offset, p.data]),
        [1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => [i, i]),
        'each publication once, in order, and nothing else (no lost)',
      );
      assert.equal(as.results.length, 2);
      assert.equal(as.results[1].recovered, true);
      // The resubscribe (since: 3) got what was missed; 7 was sent after it, and may have been
      // published before the hub read the history.
      const recovered = as.results[1].publications.map((p) => p.offset);
      assert.deepEqual(recovered.slice(0, 3), [4, 5, 6]);
      assert.ok(recovered.length === 3 || recovered[3] === 7, `recovered ${recovered}`);
    });

    test('after the server restarts (a new epoch, no history) the subscription reports lost and goes on', async () => {
      let server = await serve([...HUB, '--ws', '127.0.0.1:0']);
      const a = open(server.url, { maxReconnectDelay: 100 });
      const as = subscribe(a, 'news:restart');
      const lost = [];
      as.sub.on('lost', (pos) => lost.push(pos));
      await as.sub.ready;
      const { epoch } = await a.publish('news:restart', 'before');
      await waitFor(() => as.publications().length === 1, 'the first publication');

      const closed = new Promise((resolve) => a.once('close', resolve));
      await server.stop();
      await closed;
      server = await serve([...HUB, '--ws', `127.0.0.1:${server.port}`]);
      await waitFor(() => as.results.length === 2, 'the resubscribe on the new server');
      const again = as.results[1];
      assert.equal(again.recovered, false);
      assert.notEqual(again.epoch, epoch);
      assert.deepEqual(lost, [{ offset: again.offset, epoch: again.epoch }]);
      await a.publish('news:restart', 'after');
      await waitFor(() => as.got.length === 3, 'the publication after the restart');
      assert.deepEqual(as.got, [
        { offset: 1, epoch, data: 'before', info: as.got[0].info },
        { lost: { offset: again.offset, epoch: again.epoch } },
        { offset: again.offset + 1, epoch: again.epoch, data: 'after', info: as.got[2].info },
      ]);
    });
  });

  describe('gotalk serve --hub --jwt-secret', () => {
    let url;
    before(async () => {
      ({ url } = await serve([...HUB, '--jwt-secret', SECRET, '--ws', '127.0.0.1:0']));
    });

    test('the token provider authenticates every socket; permissions come from the token', async () => {
      const exp = now() + 3600;
      let calls = 0;
      const token = () => {
        calls++;
        return Promise.resolve(jwt({ sub: 'alice', exp, channels: CHAT }));
      };
      const gate = gated();
      const a = open(url, { token, WebSocket: gate.WebSocket, maxReconnectDelay: 100 });
      const errors = [];
      a.on('error', (e) => errors.push(e));
      await a.whenOpen();
      assert.equal(calls, 1);
      assert.equal(a.identity.user, 'alice');
      assert.equal(a.identity.expires, exp);
      const firstClient = a.identity.client;

      const as = subscribe(a, 'chat:room', { presence: true });
      await as.sub.ready;
      assert.deepEqual((await as.sub.presence()).clients, [{ user: 'alice', client: firstClient }]);
      await as.sub.publish({ text: 'one' });
      await waitFor(() => as.publications().length === 1, 'the first publication');
      assert.deepEqual(as.got[0].info, { user: 'alice', client: firstClient });

      // Outside `chat:*`: write and read are forbidden.
      await assert.rejects(a.publish('news', 1), (e) => {
        assert.ok(e instanceof RemoteError, String(e));
        assert.equal(e.message, 'forbidden: write access to "news"');
        return true;
      });
      const news = subscribe(a, 'news');
      await assert.rejects(news.sub.ready, /forbidden: read access to "news"/);
      assert.deepEqual(news.got, [{ unsubscribed: 'forbidden: read access to "news"' }]);

      // A new socket authenticates anew (a new client), and the subscription resumes.
      await forceDisconnect(a, gate);
      const other = open(url, { token: jwt({ sub: 'bob', exp, channels: CHAT }) });
      await other.publish('chat:room', { text: 'two' });
      gate.offline = false;
      await a.whenOpen();
      assert.equal(calls, 2);
      assert.equal(a.identity.user, 'alice');
      assert.notEqual(a.identity.client, firstClient);
      await waitFor(() => as.publications().length === 2, 'the one published while away');
      assert.deepEqual(
        as.publications().map((p) => [p.offset, p.data.text, p.info.user]),
        [
          [1, 'one', 'alice'],
          [2, 'two', 'bob'],
        ],
      );
      assert.deepEqual((await a.presence('chat:room')).clients, [{ user: 'alice', client: a.identity.client }]);

      // authenticate(): a later token for the same user pushes the expiry back; another user's is refused.
      const later = now() + 7200;
      assert.deepEqual(await a.authenticate(jwt({ sub: 'alice', exp: later, channels: CHAT })), {
        user: 'alice',
        client: a.identity.client,
        expires: later,
      });
      assert.equal(a.identity.expires, later);
      await assert.rejects(a.authenticate(jwt({ sub: 'mallory', exp: later, channels: CHAT })), AuthError);
      assert.equal(a.state, 'open');
      assert.equal(a.identity.user, 'alice');
      assert.deepEqual(errors, [], 'nothing reported as an error event');
    });

    test('without a token requests are unauthenticated; a bad token is an AuthError event', async () => {
      const anonymous = open(url);
      await anonymous.whenOpen();
      await assert.rejects(anonymous.publish('chat:room', 1), { message: 'unauthenticated' });

      for (const [token, why] of [
        [jwt({ sub: 'alice', exp: now() + 3600, channels: CHAT }, 'another secret'), 'invalid token signature'],
        [jwt({ sub: 'alice', exp: now() - 3600, channels: CHAT }), 'token expired'],
      ]) {
        const c = open(url, { token });
        const error = await new Promise((resolve) => c.once('error', resolve));
        assert.ok(error instanceof AuthError, String(error));
        assert.equal(error.cause.message, why);
        assert.equal(c.state, 'authenticating', 'nothing else is sent until authenticate() succeeds');
        const queued = c.publish('chat:room', 'queued');
        // A good token: the connection opens and what was queued goes out.
        await c.authenticate(jwt({ sub: 'alice', exp: now() + 3600, channels: CHAT }));
        assert.equal(c.state, 'open');
        assert.equal(typeof (await queued).offset, 'number');
      }
    });
  });
}
