// End-to-end: gotalk.js with the platform WebSocket client against a real RFC 6455 server on
// loopback. Node 20 has the WebSocket client only behind --experimental-websocket; when the global
// is missing, this file re-runs itself in a child process with that flag.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

import { connect, Handlers, ProtocolError } from '../gotalk.js';
import { startWsServer } from '../test-support/ws-server.mjs';
import { wire } from '../test-support/fakes.mjs';

const CHILD_ENV = 'GOTALK_JS_E2E_CHILD';

async function waitFor(fn, what, ms = 2000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function expectMessage(ss, expected, text = false) {
  const m = await ss.next();
  assert.equal(wire(m.bytes), expected);
  assert.equal(m.text, text, `${JSON.stringify(expected)} sent as ${text ? 'text' : 'binary'}`);
}

/** Accept the next connection on `srv` and do the server side of the handshake. */
async function acceptPeer(srv, index) {
  const ss = await waitFor(() => srv.connections[index], `connection ${index}`);
  await expectMessage(ss, '01');
  ss.sendBinary('01');
  return ss;
}

if (typeof globalThis.WebSocket === 'undefined') {
  test('end to end over a real WebSocket (child process with --experimental-websocket)', () => {
    assert.equal(process.env[CHILD_ENV], undefined, 'the child has no WebSocket even with the flag');
    // Without NODE_TEST_CONTEXT the child reports as a top-level run (TAP), not to this runner.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const args = ['--experimental-websocket', '--test', '--test-reporter=tap', fileURLToPath(import.meta.url)];
    const r = spawnSync(process.execPath, args, {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...env, [CHILD_ENV]: '1' },
    });
    const summary = (r.stdout.match(/^# (tests|pass|fail) \d+$/gm) ?? []).join(', ');
    assert.equal(r.status, 0, `child failed (${summary}):\n${r.stdout}\n${r.stderr}`);
    assert.match(summary, /# fail 0/);
    assert.doesNotMatch(summary, /# tests 0\b/);
  });
} else {
  describe('end to end over a real WebSocket', () => {
    const servers = [];
    const conns = [];
    after(async () => {
      for (const c of conns) c.close();
      for (const s of servers) await s.close();
    });
    async function setup(options = {}) {
      const srv = await startWsServer();
      servers.push(srv);
      const conn = connect(srv.url, { handlers: new Handlers(), heartbeatInterval: 0, ...options });
      conns.push(conn);
      return { srv, conn };
    }

    test('with the server down, reconnects back off from reconnectDelay, not the handshake timeout', async () => {
      // A loopback port nobody listens on.
      const probe = net.createServer();
      await new Promise((r) => probe.listen(0, '127.0.0.1', r));
      const { port } = probe.address();
      await new Promise((r) => probe.close(r));
      const closes = [];
      const t0 = Date.now();
      const conn = connect(`ws://127.0.0.1:${port}/gotalk/`, {
        heartbeatInterval: 0,
        reconnectDelay: 50,
        handshakeTimeout: 30_000,
      });
      conns.push(conn);
      conn.on('close', (err) => closes.push([Date.now() - t0, err]));
      // Attempts at about 0, 50, 150 and 350 ms; Node 20 used to wait for the handshake timeout.
      await waitFor(() => closes.length >= 3, 'three failed attempts', 5000);
      conn.close();
      assert.ok(closes[2][0] < 5000, `third failure after ${closes[2][0]} ms`);
      assert.match(closes[0][1].message, /WebSocket closed \(code 1006/);
    });

    test('handshake, request and result: version, header and payload are separate binary messages', async () => {
      const { srv, conn } = await setup();
      const ss = await acceptPeer(srv, 0);
      await conn.whenOpen();
      const p = conn.request('echo', { message: 'Hello World' });
      await expectMessage(ss, 'r0000004echo00000019');
      await expectMessage(ss, '{"message":"Hello World"}');
      ss.sendBinary('R000000000019');
      ss.sendBinary('{"message":"Hello World"}');
      assert.deepEqual(await p, { message: 'Hello World' });
      conn.close();
      await ss.whenClosed();
      assert.equal(ss.closeFrame.code, 1000);
    });

    test('text frames, several frames per message, requests and notifications from the server', async () => {
      const notes = [];
      const handlers = new Handlers()
        .handle('add', ([a, b]) => a + b)
        .handleNotification('hello', (v) => notes.push(v));
      const { srv, conn } = await setup({ handlers });
      const ss = await acceptPeer(srv, 0);
      await conn.whenOpen();
      const p = conn.bufferRequest('utf8', 'x');
      await expectMessage(ss, 'r0000004utf800000001');
      await expectMessage(ss, 'x');
      ss.sendText('R000000000009');
      ss.sendText('grüß!!!'); // 7 characters, 9 UTF-8 bytes
      assert.equal(new TextDecoder().decode(await p), 'grüß!!!');
      ss.sendBinary('n005hello00000003"a"r0001003add00000005[2,3]');
      await expectMessage(ss, 'R000100000001');
      await expectMessage(ss, '5');
      assert.deepEqual(notes, ['a']);
      ss.sendBinary('r\x00\x00\x00\x00003sub00000000');
      await expectMessage(ss, 'E\x00\x00\x00\x0000000017');
      await expectMessage(ss, 'unknown operation "sub"');
    });

    test('reconnects after the connection drops and sends queued work on the new one', async () => {
      const { srv, conn } = await setup({ reconnectDelay: 20 });
      const first = await acceptPeer(srv, 0);
      await conn.whenOpen();
      const closed = new Promise((resolve) => conn.once('close', resolve));
      first.destroy();
      const err = await closed;
      assert.equal(err.isClosedError, true);
      assert.equal(conn.state, 'reconnecting');
      const p = conn.request('later', 1); // queued while reconnecting
      const second = await acceptPeer(srv, 1);
      await expectMessage(second, 'r0000005later00000001');
      await expectMessage(second, '1');
      second.sendBinary('R000000000001');
      second.sendBinary('2');
      assert.equal(await p, 2);
    });

    test('payload message of the wrong size: the client sends f00000002 and closes', async () => {
      const { srv, conn } = await setup({ keepAlive: false });
      const ss = await acceptPeer(srv, 0);
      await conn.whenOpen();
      const closed = new Promise((resolve) => conn.once('close', resolve));
      ss.sendBinary('R000000000004');
      ss.sendText('"😀"'); // 4 UTF-16 units, 6 UTF-8 bytes: the gotalk.js miscount
      await expectMessage(ss, 'f00000002');
      await ss.whenClosed();
      assert.equal(ss.closeFrame.code, 1000);
      const err = await closed;
      assert.ok(err instanceof ProtocolError);
      assert.equal(err.code, 2);
    });

    test('version mismatch: the client sends f00000001 and closes', async () => {
      const { srv, conn } = await setup({ keepAlive: false });
      const ss = await waitFor(() => srv.connections[0], 'connection');
      await expectMessage(ss, '01');
      const closed = new Promise((resolve) => conn.once('close', resolve));
      ss.sendBinary('02');
      await expectMessage(ss, 'f00000001');
      assert.equal((await closed).code, 1);
      await ss.whenClosed();
    });
  });
}
