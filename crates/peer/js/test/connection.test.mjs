// Connection behaviour against a scripted fake WebSocket (the test plays the server).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import {
  connect,
  Connection,
  Handlers,
  handle,
  defaultHandlers,
  ProtocolError,
  RemoteError,
  RetryError,
  ClosedError,
  QueueFullError,
  TimeoutError,
} from '../gotalk.js';
import { FakeClock, makeWebSocketClass, settle, wire } from '../test-support/fakes.mjs';

const URL_ = 'ws://127.0.0.1:1/gotalk/';
const text = (b) => new TextDecoder().decode(b);

/** A connection on a fake socket and clock. The socket is accepted and versioned unless `open: false`. */
async function setup(options = {}) {
  const WS = makeWebSocketClass();
  const clock = new FakeClock(options.now);
  const handlers = options.handlers ?? new Handlers();
  const conn = connect(URL_, { WebSocket: WS, timers: clock.timers, handlers, ...options });
  const events = { open: 0, close: [] };
  conn.on('open', () => events.open++);
  conn.on('close', (e) => events.close.push(e));
  const ws = WS.instances[0];
  if (options.open !== false) {
    ws.handshake();
  }
  return { WS, clock, conn, ws, handlers, events };
}

/** Messages the client sent after its version, as wire strings, then forget them. */
function takeSent(ws) {
  const out = ws.sentWire.slice(1);
  ws.sent.length = 1;
  return out;
}

describe('handshake', () => {
  test('sends its version as its own binary message once the socket opens', async () => {
    const { WS, conn, ws, events } = await setup({ open: false });
    // our client advertises what it handles beyond the original gotalk.js
    assert.equal(ws.url, `${URL_}?caps=retry,stream`);
    assert.equal(ws.binaryType, 'arraybuffer');
    assert.equal(conn.state, 'connecting');
    assert.deepEqual(ws.sent, []);
    ws.accept();
    assert.deepEqual(
      ws.sent.map((m) => [m.text, wire(m.bytes)]),
      [[false, '01']],
    );
    assert.equal(events.open, 0, 'not open before the peer version');
    ws.receiveWire('01');
    assert.equal(events.open, 1);
    assert.equal(conn.state, 'open');
    assert.equal(WS.instances.length, 1);
    conn.close();
  });

  test('version mismatch: sends f00000001, closes, reports the error', async () => {
    const { conn, ws, events } = await setup({ open: false, keepAlive: false });
    ws.accept();
    ws.receiveWire('02');
    assert.deepEqual(ws.sentWire, ['01', 'f00000001']);
    assert.equal(ws.readyState, 3);
    assert.equal(ws.closeCall.code, 1000);
    assert.equal(events.close.length, 1);
    const err = events.close[0];
    assert.equal(err.isGotalkProtocolError, true);
    assert.equal(err.code, 1);
    assert.equal(err.remote, false);
    assert.equal(conn.state, 'closed');
  });

  test('a first message that is not a version is refused with code 1', async () => {
    const { ws, events } = await setup({ open: false, keepAlive: false });
    ws.accept();
    ws.receiveWire('r0');
    assert.equal(ws.sentWire.at(-1), 'f00000001');
    assert.equal(events.close[0].code, 1);
  });

  test('version and frames in the same message are all read', async () => {
    const handlers = new Handlers().handle('ping', () => 'pong');
    const { ws } = await setup({ open: false, handlers });
    ws.accept();
    ws.receiveWire('01r0007004ping00000000');
    await settle();
    assert.deepEqual(takeSent(ws), ['R000700000006', '"pong"']);
  });

  test('handshake timeout: sends f00000003 and closes', async () => {
    const { clock, ws, events } = await setup({ open: false, keepAlive: false, handshakeTimeout: 1000 });
    ws.accept();
    clock.advance(999);
    assert.equal(events.close.length, 0);
    clock.advance(1);
    assert.deepEqual(ws.sentWire, ['01', 'f00000003']);
    assert.equal(events.close[0].code, 3);
  });
});

describe('requests', () => {
  test('request/response with header and payload as separate messages', async () => {
    const { conn, ws } = await setup();
    const p = conn.request('echo', { message: 'Hello World' });
    assert.deepEqual(takeSent(ws), ['r0000004echo00000019', '{"message":"Hello World"}']);
    assert.ok(
      ws.sent.every((m) => !m.text),
      'everything is sent as binary',
    );
    ws.receiveWire('R000000000019');
    ws.receiveWire('{"message":"Hello World"}');
    assert.deepEqual(await p, { message: 'Hello World' });
    conn.close();
  });

  test('result as one message, as text frames, and results out of order', async () => {
    const { conn, ws } = await setup();
    const a = conn.request('a', 1);
    const b = conn.request('b', 2);
    const c = conn.bufferRequest('c', new Uint8Array([1, 2, 3]));
    assert.deepEqual(takeSent(ws), [
      'r0000001a00000001',
      '1',
      'r0001001b00000001',
      '2',
      'r0002001c00000003',
      '\x01\x02\x03',
    ]);
    ws.receiveWire('R000100000003"b"R000000000003"a"');
    assert.equal(await b, 'b');
    assert.equal(await a, 'a');
    // A text payload frame: 'grün' is 4 characters but 5 UTF-8 bytes, so a declared 4 is invalid.
    ws.receive('R000200000004');
    ws.receive('grün');
    await assert.rejects(c, ClosedError);
    assert.equal(ws.sentWire.at(-1), 'f00000002');
    conn.close();
  });

  test('text payload frames are counted in UTF-8 bytes', async () => {
    const { conn, ws } = await setup();
    const p = conn.bufferRequest('x', '');
    ws.receive('R000000000006');
    ws.receive('grüß');
    assert.equal(text(await p), 'grüß');
    conn.close();
  });

  test('UTF-8 sizes of outgoing requests: NUL, non-BMP, grüß op name', async () => {
    const { conn, ws } = await setup();
    conn.bufferRequest('grüß', 'a\u0000😀').catch(() => {});
    const [header, payload] = ws.sent.slice(1).map((m) => m.bytes);
    assert.equal(text(header), 'r0000006grüß00000006');
    assert.equal(payload.length, 6);
    conn.request('n', 'a\u0000😀').catch(() => {});
    assert.equal(ws.sentWire.at(-2), 'r0001001n0000000d'); // "a\u0000😀" as JSON: 13 bytes
    conn.close();
  });

  test('error result rejects with the remote text', async () => {
    const { conn, ws } = await setup();
    const p = conn.request('fail', null);
    ws.receive('E000000000011');
    ws.receive('bad input: grün!');
    const err = await p.then(
      () => assert.fail('resolved'),
      (e) => e,
    );
    assert.ok(err instanceof RemoteError);
    assert.equal(err.isRemoteError, true);
    assert.equal(err.message, 'bad input: grün!');
    conn.close();
  });

  test('a single request may get a streaming result', async () => {
    const { conn, ws } = await setup();
    const p = conn.request('list', null);
    ws.receiveWire('S000000000002[1S000000000003,2]S000000000000');
    assert.deepEqual(await p, [1, 2]);
    conn.close();
  });

  test('empty result payload decodes to undefined; invalid JSON rejects', async () => {
    const { conn, ws } = await setup();
    const a = conn.request('a');
    const b = conn.request('b');
    ws.receiveWire('R000000000000R000100000002{x');
    assert.equal(await a, undefined);
    await assert.rejects(b, /invalid JSON/);
    conn.close();
  });

  test('a result for an ID that is not pending is dropped; the connection stays open', async () => {
    const { conn, ws, events } = await setup();
    ws.receiveWire('R009900000002hi' + 'S009900000000' + 'E009900000001x' + 'e0099' + '00000000' + '00000000');
    const p = conn.request('x');
    ws.receiveWire('R000000000001' + '7');
    assert.equal(await p, 7);
    // Go sends an extra empty S after E for a failed stream handler.
    const q = conn.request('y');
    ws.receiveWire('E000100000003bad');
    ws.receiveWire('S000100000000');
    await assert.rejects(q, /bad/);
    assert.equal(conn.state, 'open');
    assert.equal(events.close.length, 0);
    conn.close();
  });

  test('IDs count up in base 36 and are never reused while in flight', async () => {
    const { conn, ws } = await setup();
    const ids = [];
    for (let i = 0; i < 38; i++) conn.bufferRequest('x').catch(() => {});
    for (const w of takeSent(ws)) ids.push(w.slice(1, 5));
    assert.equal(ids[0], '0000');
    assert.equal(ids[10], '000a');
    assert.equal(ids[35], '000z');
    assert.equal(ids[36], '0010');
    assert.equal(new Set(ids).size, 38);
    conn.close();
  });

  test('request timeout rejects and a late result is dropped', async () => {
    const { conn, ws, clock } = await setup({ requestTimeout: 100 });
    const p = conn.request('slow');
    clock.advance(100);
    await assert.rejects(p, (e) => e instanceof TimeoutError && e.isTimeoutError);
    ws.receiveWire('R000000000001' + '1');
    assert.equal(conn.state, 'open');
    conn.close();
  });
});

describe('retry', () => {
  test('RetryResult: waits as told, resends with the same ID, then resolves', async () => {
    const { conn, ws, clock } = await setup();
    const p = conn.request('op', 'x');
    assert.deepEqual(takeSent(ws), ['r0000002op00000003', '"x"']);
    ws.receiveWire('e0000000001f400000014"request rate limit"'); // wait 500 ms
    clock.advance(499);
    assert.deepEqual(takeSent(ws), []);
    clock.advance(1);
    assert.deepEqual(takeSent(ws), ['r0000002op00000003', '"x"']);
    ws.receiveWire('R00000000000242');
    assert.equal(await p, 42);
    conn.close();
  });

  test('a result arriving while waiting to retry is dropped', async () => {
    const { conn, ws, clock } = await setup();
    const p = conn.request('op');
    ws.receiveWire('e00000000006400000000');
    ws.receiveWire('R000000000001' + '1'); // not in flight: dropped
    clock.advance(100);
    ws.receiveWire('R000000000001' + '2');
    assert.equal(await p, 2);
    conn.close();
  });

  test('gives up after maxRetries with a RetryError', async () => {
    const { conn, ws, clock } = await setup({ maxRetries: 2 });
    const p = conn.request('op');
    for (let i = 0; i < 2; i++) {
      ws.receiveWire('e0000' + '00000000' + '0000000b' + '"try later"');
      clock.advance(0);
    }
    ws.receiveWire('e0000' + '000003e8' + '0000000b' + '"try later"');
    const err = await p.then(
      () => assert.fail('resolved'),
      (e) => e,
    );
    assert.ok(err instanceof RetryError);
    assert.equal(err.isRetryError, true);
    assert.equal(err.wait, 1000);
    assert.match(err.message, /after 2 retries: "try later"/);
    // Sent 3 times in all.
    assert.equal(takeSent(ws).filter((w) => w.startsWith('r0000')).length, 3);
    conn.close();
  });

  test('honours the wait with real timers (small waits)', async () => {
    const WS = makeWebSocketClass();
    const conn = connect(URL_, { WebSocket: WS, handlers: new Handlers(), heartbeatInterval: 0 });
    const ws = WS.instances[0];
    ws.handshake();
    const started = performance.now();
    const p = conn.request('op');
    ws.receiveWire('e00000000001e00000000'); // 30 ms
    const deadline = Date.now() + 2000;
    while (ws.sent.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const elapsed = performance.now() - started;
    assert.equal(ws.sentWire.at(-2), 'r0000002op00000004', 'resent');
    assert.ok(elapsed >= 29, `waited ${elapsed} ms`);
    ws.receiveWire('R000000000001' + '5');
    assert.equal(await p, 5);
    conn.close();
  });

  test('a stream request refused with retry rejects with the wait', async () => {
    const { conn, ws } = await setup();
    const sr = conn.streamRequest('up');
    sr.write('a');
    ws.receiveWire('e!000' + '00001388' + '00000013' + '"stream rate limit"');
    await assert.rejects(sr.result, (e) => e instanceof RetryError && e.wait === 5000);
    assert.equal(sr.write('b'), false, 'writes after the result are ignored');
    conn.close();
  });
});

describe('serving the peer', () => {
  test('unknown operation gets E `unknown operation "NAME"` and the connection stays open', async () => {
    const { conn, ws } = await setup();
    ws.receiveWire('r0001004nope00000002{}');
    assert.deepEqual(takeSent(ws), ['E000100000018', 'unknown operation "nope"']);
    assert.equal(conn.state, 'open');
    conn.close();
  });

  test('JSON, buffer and async handlers answer with R; thrown errors become E', async () => {
    const handlers = new Handlers()
      .handle('greet', (p, ctx) => ({ greeting: `Hello ${p.name}`, op: ctx.op }))
      .handleBuffer('rev', (b) => Uint8Array.from(b).reverse())
      .handle('later', async (n) => {
        await new Promise((r) => setTimeout(r, 1));
        return n + 1;
      })
      .handle('boom', () => {
        throw new Error('it broke');
      })
      .handle('nothing', () => undefined);
    const { conn, ws } = await setup({ handlers });
    ws.receiveWire('r0001005greet0000000f{"name":"Anna"}');
    ws.receiveWire('r0002003rev00000003');
    ws.receiveWire('abc');
    ws.receiveWire('r0003005later000000011');
    ws.receiveWire('r0004004boom00000000');
    ws.receiveWire('r0005007nothing00000000');
    await settle();
    await new Promise((r) => setTimeout(r, 10));
    const sent = takeSent(ws);
    const pairs = {};
    for (let i = 0; i < sent.length; i++) {
      const w = sent[i];
      const size = parseInt(w.slice(5, 13), 16);
      pairs[w.slice(1, 5)] = [w[0], size ? sent[++i] : ''];
    }
    assert.deepEqual(pairs, {
      '0001': ['R', '{"greeting":"Hello Anna","op":"greet"}'],
      '0002': ['R', 'cba'],
      '0003': ['R', '2'],
      '0004': ['E', 'it broke'],
      '0005': ['R', 'null'],
    });
    conn.close();
  });

  test('binary request IDs from a Go peer are echoed byte for byte', async () => {
    const handlers = new Handlers().handleBuffer('echo', (b) => b);
    const { conn, ws } = await setup({ handlers });
    ws.receiveWire('r\x01\x00\x00\x00004echo00000002hi');
    await settle();
    assert.deepEqual(takeSent(ws), ['R\x01\x00\x00\x0000000002', 'hi']);
    conn.close();
  });

  test('module-level handle() registers on defaultHandlers, the default for connections', async () => {
    handle('js-test-default', (x) => x * 2);
    try {
      const WS = makeWebSocketClass();
      const conn = connect(URL_, { WebSocket: WS, timers: new FakeClock().timers });
      assert.equal(conn.handlers, defaultHandlers);
      const ws = WS.instances[0];
      ws.handshake();
      ws.receiveWire('r000a00fjs-test-default00000002');
      ws.receiveWire('21');
      await settle();
      assert.deepEqual(ws.sentWire.slice(1), ['R000a00000002', '42']);
      conn.close();
    } finally {
      handle('js-test-default', null);
    }
    assert.equal(defaultHandlers.findRequestHandler('js-test-default'), null);
  });

  test('fallback handler for the empty name', async () => {
    const handlers = new Handlers().handle('', (p, ctx) => `fallback for ${ctx.op}`);
    const { conn, ws } = await setup({ handlers });
    ws.receiveWire('r0001003xyz00000000');
    await settle();
    assert.deepEqual(takeSent(ws), ['R000100000012', '"fallback for xyz"']);
    conn.close();
  });

  test('a reply for a request from a previous socket is not sent on the new one', async () => {
    let release;
    const handlers = new Handlers().handle('wait', () => new Promise((r) => (release = r)));
    const { conn, ws, WS, clock } = await setup({ handlers });
    ws.receiveWire('r0001004wait00000000');
    await settle();
    ws.drop();
    clock.advance(500);
    const ws2 = WS.instances[1];
    ws2.handshake();
    release(1);
    await settle();
    assert.deepEqual(ws2.sentWire, ['01']);
    conn.close();
  });
});

describe('notifications and heartbeats', () => {
  test('outgoing notification', async () => {
    const { conn, ws } = await setup();
    conn.notify('chat message', { message: 'Hi', from: 'nthn', room: 'gonuts' });
    conn.bufferNotify('raw', new Uint8Array(0));
    assert.deepEqual(takeSent(ws), [
      'n00cchat message0000002e',
      '{"message":"Hi","from":"nthn","room":"gonuts"}',
      'n003raw00000000',
    ]);
    conn.close();
  });

  test('incoming notification: handler, buffer handler and the notification event', async () => {
    const got = [];
    const handlers = new Handlers()
      .handleNotification('chat message', (v, ctx) => got.push(['json', ctx.name, v]))
      .handleBufferNotification('raw', (b) => got.push(['raw', wire(b)]));
    const { conn, ws } = await setup({ handlers });
    const events = [];
    conn.on('notification', (n) => events.push([n.name, n.value]));
    ws.receiveWire('n00cchat message0000002e{"message":"Hi","from":"nthn","room":"gonuts"}');
    ws.receiveWire('n003raw00000002');
    ws.receiveWire('\x00\xff');
    ws.receiveWire('n007unknown00000000'); // no handler: ignored
    assert.deepEqual(got, [
      ['json', 'chat message', { message: 'Hi', from: 'nthn', room: 'gonuts' }],
      ['raw', '\x00\xff'],
    ]);
    assert.deepEqual(events, [
      ['chat message', { message: 'Hi', from: 'nthn', room: 'gonuts' }],
      ['raw', undefined],
      ['unknown', undefined],
    ]);
    assert.deepEqual(takeSent(ws), [], 'notifications are never answered');
    conn.close();
  });

  test('a throwing notification handler is reported on the error event, not fatal', async () => {
    const handlers = new Handlers().handleNotification('x', () => {
      throw new Error('oops');
    });
    const { conn, ws } = await setup({ handlers });
    const errors = [];
    conn.on('error', (e) => errors.push(e.message));
    ws.receiveWire('n001x00000000');
    assert.deepEqual(errors, ['oops']);
    assert.equal(conn.state, 'open');
    conn.close();
  });

  test('heartbeats every 20 s with load 0 and the time; incoming heartbeat event', async () => {
    const { conn, ws, clock } = await setup({ now: 1423433370_000 - 20_000 });
    clock.advance(19_999);
    assert.deepEqual(takeSent(ws), []);
    clock.advance(1);
    assert.deepEqual(takeSent(ws), ['h000054d7de9a']);
    clock.advance(20_000);
    assert.deepEqual(takeSent(ws), ['h000054d7deae']);
    const beats = [];
    conn.on('heartbeat', (h) => beats.push(h));
    ws.receiveWire('h000254d7de9a');
    assert.equal(beats.length, 1);
    assert.equal(beats[0].load, 2);
    assert.equal(beats[0].time.toISOString(), '2015-02-08T22:09:30.000Z');
    conn.close();
    clock.advance(60_000);
    assert.deepEqual(takeSent(ws), [], 'no heartbeats after close');
  });

  test('heartbeat interval is configurable and 0 disables it', async () => {
    const a = await setup({ heartbeatInterval: 1000 });
    a.clock.advance(3000);
    assert.equal(takeSent(a.ws).length, 3);
    a.conn.close();
    const b = await setup({ heartbeatInterval: 0 });
    b.clock.advance(100_000);
    assert.equal(takeSent(b.ws).length, 0);
    b.conn.close();
  });
});

describe('stream requests', () => {
  test('outgoing stream request with a streaming result (async iterator)', async () => {
    const { conn, ws } = await setup();
    const sr = conn.streamRequest('echo');
    assert.equal(sr.id, null, 'nothing sent before the first write');
    assert.deepEqual(takeSent(ws), []);
    sr.write('{"message":');
    sr.write('"Hello World"}');
    sr.write(''); // ignored: an empty part would end the stream
    sr.end();
    assert.equal(sr.id, '!000');
    assert.deepEqual(takeSent(ws), [
      's!000004echo0000000b',
      '{"message":',
      'p!0000000000e',
      '"Hello World"}',
      'p!00000000000',
    ]);
    assert.throws(() => sr.write('more'), /after end/);
    ws.receiveWire('S!0000000000b{"message":');
    ws.receiveWire('S!0000000000e');
    ws.receiveWire('"Hello World"}');
    ws.receiveWire('S!00000000000');
    const chunks = [];
    for await (const c of sr) chunks.push(text(c));
    assert.deepEqual(chunks, ['{"message":', '"Hello World"}']);
    conn.close();
  });

  test('outgoing stream request with a single result (result promise)', async () => {
    const { conn, ws } = await setup();
    const sr = conn.streamRequest('sum');
    sr.write('1,');
    sr.write('2');
    ws.receiveWire('R!00000000001' + '3');
    assert.equal(text(await sr.result), '3');
    assert.equal(sr.finished, true);
    assert.equal(sr.write('4'), false);
    sr.end(); // no-op on the wire: the result is in
    assert.deepEqual(takeSent(ws), ['s!000003sum00000002', '1,', 'p!00000000001', '2']);
    conn.close();
  });

  test('end() without writes sends an empty stream request then its end; result stream concatenated', async () => {
    const { conn, ws } = await setup();
    const sr = conn.streamRequest('list');
    sr.end();
    assert.deepEqual(takeSent(ws), ['s!000004list00000000', 'p!00000000000']);
    ws.receiveWire('S!00000000002abS!00000000001cS!00000000000');
    assert.equal(text(await sr.result), 'abc');
    conn.close();
  });

  test('error result rejects the iterator', async () => {
    const { conn, ws } = await setup();
    const sr = conn.streamRequest('x');
    sr.write('a');
    ws.receiveWire('E!00000000004nope');
    await assert.rejects(async () => {
      for await (const _ of sr) assert.fail('no chunks');
    }, RemoteError);
    conn.close();
  });

  test('incoming stream request answered by handleStream with a result stream', async () => {
    const handlers = new Handlers().handleStream('upper', async (input, ctx) => {
      for await (const chunk of input) ctx.write(text(chunk).toUpperCase());
      return 'END';
    });
    const { conn, ws } = await setup({ handlers });
    ws.receiveWire('s0001005upper00000000'); // empty first payload does not end the stream
    ws.receiveWire('p000100000003');
    ws.receiveWire('abc');
    await settle();
    assert.deepEqual(takeSent(ws), ['S000100000003', 'ABC']);
    ws.receiveWire('p000100000002de');
    ws.receiveWire('p000100000000');
    await settle();
    assert.deepEqual(takeSent(ws), ['S000100000002', 'DE', 'S000100000003', 'END', 'S000100000000']);
    conn.close();
  });

  test('a stream handler that writes nothing answers with a single result', async () => {
    const handlers = new Handlers().handleStream('count', async (input, ctx) => {
      assert.equal(ctx.write(''), true); // empty writes are ignored: an empty S would end the stream
      let n = 0;
      for await (const c of input) n += c.length;
      return String(n);
    });
    const { conn, ws } = await setup({ handlers });
    ws.receiveWire('s0001005count00000002abp000100000001cp000100000000');
    await settle();
    assert.deepEqual(takeSent(ws), ['R000100000001', '3']);
    conn.close();
  });

  test('an incoming stream request to a JSON handler is collected first; a single request to a stream handler works', async () => {
    const handlers = new Handlers()
      .handle('add', (xs) => xs.reduce((a, b) => a + b, 0))
      .handleStream('twice', async (input, ctx) => {
        for await (const c of input) {
          ctx.write(c);
          ctx.write(c);
        }
      });
    const { conn, ws } = await setup({ handlers });
    ws.receiveWire('s0001003add00000002[1p000100000004,2,3p000100000001]p000100000000');
    await settle();
    assert.deepEqual(takeSent(ws), ['R000100000001', '6']);
    ws.receiveWire('r0002005twice00000001x');
    await settle();
    assert.deepEqual(takeSent(ws), ['S000200000001', 'x', 'S000200000001', 'x', 'S000200000000']);
    conn.close();
  });

  test('stream request for an unknown operation: E, then its parts are dropped', async () => {
    const { conn, ws, events } = await setup();
    ws.receiveWire('s0001004nope00000001a');
    ws.receiveWire('p000100000001bp000100000000');
    assert.deepEqual(takeSent(ws), ['E000100000018', 'unknown operation "nope"']);
    assert.equal(conn.state, 'open');
    assert.equal(events.close.length, 0);
    // After the end part the ID is free again; another part for it is a violation.
    ws.receiveWire('p000100000001c');
    assert.deepEqual(takeSent(ws), ['f00000002']);
    assert.equal(events.close.at(-1).code, 2);
    conn.close();
  });

  test('a stream handler failure sends E', async () => {
    const handlers = new Handlers().handleStream('bad', async (input, ctx) => {
      ctx.write('partial');
      throw new Error('handler failed');
    });
    const { conn, ws } = await setup({ handlers });
    ws.receiveWire('s0001003bad00000000');
    await settle();
    assert.deepEqual(takeSent(ws), ['S000100000007', 'partial', 'E00010000000e', 'handler failed']);
    conn.close();
  });

  test('a reused in-flight stream request ID is a protocol violation (f00000002)', async () => {
    const handlers = new Handlers().handleStream('s', async (input) => {
      for await (const _ of input);
    });
    const { conn, ws, events } = await setup({ handlers, keepAlive: false });
    ws.receiveWire('s0001001s00000000');
    ws.receiveWire('s0001001s00000000');
    assert.deepEqual(takeSent(ws), ['f00000002']);
    assert.equal(ws.readyState, 3);
    assert.equal(events.close[0].code, 2);
    assert.equal(conn.state, 'closed');
  });
});

describe('invalid input from the peer', () => {
  test('lone header followed by a message of another size: f00000002 and close', async () => {
    const { conn, ws, events } = await setup({ keepAlive: false });
    const p = conn.request('x');
    ws.receiveWire('R000000000005');
    ws.receiveWire('abcdefR000000000000');
    assert.deepEqual(takeSent(ws).slice(-1), ['f00000002']);
    assert.equal(ws.readyState, 3);
    const err = events.close[0];
    assert.equal(err.isGotalkProtocolError, true);
    assert.equal(err.code, 2);
    await assert.rejects(p, ClosedError);
    assert.equal(conn.state, 'closed');
  });

  test('unknown message type: f00000002', async () => {
    const { ws, events } = await setup({ keepAlive: false });
    ws.receiveWire('x0001');
    assert.equal(ws.sentWire.at(-1), 'f00000002');
    assert.equal(events.close[0].code, 2);
  });

  test('payload above maxPayloadSize: f00000002 before the payload arrives', async () => {
    const { ws, events } = await setup({ keepAlive: false, maxPayloadSize: 16 });
    ws.receiveWire('R000000000011');
    assert.equal(ws.sentWire.at(-1), 'f00000002');
    assert.equal(events.close[0].tooLarge, true);
  });

  test('ProtocolError from the peer closes with isGotalkProtocolError and code', async () => {
    const { conn, ws, events } = await setup({ keepAlive: false });
    const p = conn.request('x');
    ws.receiveWire('f00000002');
    const err = events.close[0];
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.isGotalkProtocolError, true);
    assert.equal(err.code, 2);
    assert.equal(err.remote, true);
    assert.equal(ws.readyState, 3);
    assert.deepEqual(takeSent(ws), ['r0000001x00000004', 'null'], 'no f sent back');
    await assert.rejects(p, ClosedError);
  });
});

describe('queueing while disconnected', () => {
  test('messages wait for the connection and are flushed in order', async () => {
    const { conn, ws, events } = await setup({ open: false });
    conn.notify('first', 1);
    const p = conn.request('echo', 'queued');
    const sr = conn.streamRequest('s');
    sr.write('a');
    sr.end();
    assert.equal(conn.queuedMessages, 4);
    assert.deepEqual(ws.sent, []);
    ws.handshake();
    assert.equal(events.open, 1);
    assert.deepEqual(takeSent(ws), [
      'n005first00000001',
      '1',
      'r0000004echo00000008',
      '"queued"',
      's!000001s00000001',
      'a',
      'p!00000000000',
    ]);
    ws.receiveWire('R000000000003"r"');
    assert.equal(await p, 'r');
    conn.close();
  });

  test('the queue is bounded (default 100); overflowing calls fail with a clear error', async () => {
    const { conn, ws } = await setup({ open: false });
    for (let i = 0; i < 99; i++) conn.notify('n', i);
    const last = conn.request('r', 1);
    assert.equal(conn.queuedMessages, 100);
    assert.throws(
      () => conn.notify('n', 100),
      (e) => e instanceof QueueFullError && e.isQueueFullError && /queue is full \(100 messages\)/.test(e.message),
    );
    await assert.rejects(conn.request('r', 2), QueueFullError);
    const sr = conn.streamRequest('s');
    assert.throws(() => sr.write('x'), QueueFullError);
    await assert.rejects(sr.result, QueueFullError);
    assert.throws(() => sr.end(), QueueFullError, 'a stream request that failed to start stays failed');
    ws.handshake();
    assert.equal(conn.queuedMessages, 0);
    assert.equal(takeSent(ws).length, 99 * 2 + 2);
    ws.receiveWire('R000000000001' + '1');
    assert.equal(await last, 1);
    conn.close();
  });

  test('sendBufferLimit is configurable; 0 disables queueing', async () => {
    const a = await setup({ open: false, sendBufferLimit: 2 });
    a.conn.notify('a');
    a.conn.notify('b');
    assert.throws(() => a.conn.notify('c'), QueueFullError);
    a.conn.close();
    const b = await setup({ open: false, sendBufferLimit: 0 });
    assert.throws(() => b.conn.notify('a'), /queueing is disabled/);
    b.conn.close();
  });

  test('queued requests survive a failed attempt and are sent after reconnecting', async () => {
    const { conn, WS, ws, clock } = await setup({ open: false });
    const p = conn.request('x', 1);
    ws.drop(1006);
    clock.advance(500);
    const ws2 = WS.instances[1];
    ws2.handshake();
    assert.deepEqual(takeSent(ws2), ['r0000001x00000001', '1']);
    ws2.receiveWire('R000000000001' + '2');
    assert.equal(await p, 2);
    conn.close();
  });

  test('in-flight requests are rejected when the connection drops', async () => {
    const { conn, ws, events } = await setup();
    const p = conn.request('x');
    ws.drop(1006, 'gone');
    const err = await p.then(
      () => assert.fail('resolved'),
      (e) => e,
    );
    assert.ok(err instanceof ClosedError);
    assert.equal(err.isClosedError, true);
    assert.equal(events.close[0].wsCode, 1006);
    assert.match(events.close[0].message, /1006: gone/);
    assert.equal(conn.state, 'reconnecting');
    conn.close();
  });

  test('without keep-alive, calls after the connection closed are rejected', async () => {
    const { conn, ws } = await setup({ keepAlive: false });
    ws.drop();
    assert.equal(conn.state, 'closed');
    await assert.rejects(conn.request('x'), /connection is closed/);
    assert.throws(() => conn.notify('x'), ClosedError);
  });
});

describe('keep-alive and reconnect', () => {
  test('back-off starts at 500 ms, doubles, caps at 5 s, and resets after a successful open', async () => {
    const { conn, WS, clock, events } = await setup();
    WS.instances[0].drop();
    const delays = [];
    for (let attempt = 1; attempt <= 7; attempt++) {
      const before = WS.instances.length;
      assert.deepEqual(clock.pendingDelays.length, 1);
      const d = clock.pendingDelays[0];
      clock.advance(d - 1);
      assert.equal(WS.instances.length, before, `no reconnect before ${d} ms`);
      clock.advance(1);
      assert.equal(WS.instances.length, before + 1, `reconnected after ${d} ms`);
      delays.push(d);
      WS.instances.at(-1).drop(); // attempt fails before opening
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
    // A successful connection resets the back-off.
    clock.advance(clock.pendingDelays[0]);
    const good = WS.instances.at(-1);
    good.handshake();
    assert.equal(events.open, 2);
    good.drop();
    assert.deepEqual(clock.pendingDelays, [500]);
    conn.close();
    assert.deepEqual(clock.pendingDelays, [], 'close() cancels the reconnect');
    assert.equal(conn.state, 'closed');
  });

  test('a failed attempt with an error event and no close event (Node 20) backs off like a browser', async () => {
    const { conn, WS, clock, events } = await setup({ open: false });
    const delays = [];
    for (let attempt = 1; attempt <= 4; attempt++) {
      const before = WS.instances.length;
      WS.instances.at(-1).fail();
      assert.equal(conn.state, 'reconnecting', `attempt ${attempt} ends at once`);
      assert.equal(events.close.length, attempt, 'one close event per failed attempt');
      assert.ok(events.close.at(-1) instanceof ClosedError);
      assert.match(events.close.at(-1).message, /code 1006: Received network error/);
      // Only the reconnect is pending: no handshake timer left to wait for.
      assert.deepEqual(clock.pendingDelays.length, 1);
      const d = clock.pendingDelays[0];
      clock.advance(d);
      assert.equal(WS.instances.length, before + 1, `reconnected after ${d} ms`);
      delays.push(d);
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000]);
    // Browsers: error then close; still one close event per attempt.
    WS.instances.at(-1).fail({ close: true });
    assert.equal(events.close.length, 5);
    assert.deepEqual(clock.pendingDelays, [5000]);
    conn.close();
  });

  test('immediate reconnect after a timeout close (f00000003 from the peer)', async () => {
    const { conn, WS, ws, clock, events } = await setup();
    ws.receiveWire('f00000003');
    assert.equal(events.close[0].code, 3);
    assert.deepEqual(clock.pendingDelays, [0]);
    clock.advance(0);
    assert.equal(WS.instances.length, 2);
    WS.instances[1].handshake();
    assert.equal(events.open, 2);
    conn.close();
  });

  test('a handshake that never completes is retried with back-off', async () => {
    const { conn, WS, ws, clock } = await setup({ open: false, handshakeTimeout: 300 });
    ws.accept();
    clock.advance(300);
    assert.deepEqual(ws.sentWire, ['01', 'f00000003']);
    assert.deepEqual(clock.pendingDelays, [500]);
    clock.advance(500);
    assert.equal(WS.instances.length, 2);
    conn.close();
  });

  test('close() emits close(null), rejects pending and queued work, stops reconnecting', async () => {
    const { conn, ws, events, clock, WS } = await setup();
    const inFlight = conn.request('a');
    conn.close();
    assert.equal(ws.readyState, 3);
    assert.deepEqual(events.close, [null]);
    await assert.rejects(inFlight, ClosedError);
    await assert.rejects(conn.request('b'), ClosedError);
    await assert.rejects(conn.whenOpen(), ClosedError);
    clock.advance(60_000);
    assert.equal(WS.instances.length, 1);
    conn.close(); // idempotent
    assert.deepEqual(events.close, [null]);
  });

  test('whenOpen resolves on the next open', async () => {
    const { conn, ws } = await setup({ open: false });
    const w = conn.whenOpen();
    ws.handshake();
    assert.equal(await w, conn);
    assert.equal(await conn.whenOpen(), conn);
    conn.close();
  });

  test('open() on an already open connection throws; a closed one can be reopened', async () => {
    const { conn, WS } = await setup();
    assert.throws(() => conn.open(URL_), /already open/);
    conn.close();
    conn.open(URL_);
    assert.equal(WS.instances.length, 2);
    assert.equal(conn.state, 'connecting');
    conn.close();
  });

  test('relative and http(s) URLs become ws(s) URLs; a missing WebSocket is a clear error', () => {
    const WS = makeWebSocketClass();
    const c = new Connection({ WebSocket: WS, timers: new FakeClock().timers, handlers: new Handlers() });
    c.open('https://example.test/gotalk/');
    assert.equal(WS.instances[0].url, 'wss://example.test/gotalk/?caps=retry,stream');
    c.close();
    const d = new Connection({ WebSocket: WS, timers: new FakeClock().timers, handlers: new Handlers() });
    d.open('ws://example.test/gotalk/?room=1&caps=retry');
    assert.equal(WS.instances[1].url, 'ws://example.test/gotalk/?room=1&caps=retry', 'an explicit caps is kept');
    d.close();
    const saved = globalThis.WebSocket;
    try {
      delete globalThis.WebSocket;
      assert.throws(() => new Connection().open(URL_), /no WebSocket implementation/);
    } finally {
      if (saved !== undefined) globalThis.WebSocket = saved;
    }
  });
});
