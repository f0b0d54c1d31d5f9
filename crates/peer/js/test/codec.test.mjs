// Codec tests: wire vectors, UTF-8 sizing, header encoding and the frame-based reader.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  codec,
  encodeMessage,
  encodeFrames,
  encodeHeader,
  decodeHeader,
  decodeMessage,
  FrameReader,
  ProtocolError,
  utf8ByteLength,
  encodeVersion,
  parseVersion,
  DEFAULT_MAX_PAYLOAD,
  MAX_NAME_LENGTH,
} from '../gotalk.js';
import { wire, bytesOf } from '../test-support/fakes.mjs';

const readJsonl = (name) =>
  readFileSync(new URL(`./vectors/${name}`, import.meta.url), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));

const hexToBytes = (h) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
const bytesToHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const utf8 = (s) => new TextEncoder().encode(s);

const TYPE = {
  SingleRequest: 'r',
  StreamRequest: 's',
  StreamRequestPart: 'p',
  SingleResult: 'R',
  StreamResult: 'S',
  ErrorResult: 'E',
  RetryResult: 'e',
  Notification: 'n',
  Heartbeat: 'h',
  ProtocolError: 'f',
};

/** The vector's message as a codec message object. */
function vectorMessage(v) {
  const m = v.message;
  const msg = { type: TYPE[m.type] };
  if (m.id_hex !== undefined) msg.id = wire(hexToBytes(m.id_hex));
  if (m.op !== undefined) msg.op = m.op;
  if (m.name !== undefined) msg.name = m.name;
  if (m.wait_ms !== undefined) msg.wait = m.wait_ms;
  if (m.code !== undefined) msg.code = m.code;
  if (m.load !== undefined) msg.load = m.load;
  if (m.time !== undefined) msg.time = m.time;
  if (m.payload_hex !== undefined) msg.payload = hexToBytes(m.payload_hex);
  return msg;
}

function assertSameMessage(actual, expected, label) {
  for (const k of ['type', 'id', 'op', 'name', 'wait', 'code', 'load', 'time']) {
    if (expected[k] !== undefined) assert.equal(actual[k], expected[k], `${label}: field ${k}`);
  }
  assert.equal(bytesToHex(actual.payload), bytesToHex(expected.payload ?? new Uint8Array(0)), `${label}: payload`);
}

describe('wire vectors (shared/vectors/messages.jsonl)', () => {
  const vectors = readJsonl('messages.jsonl');

  test('vector file is complete', () => {
    assert.equal(vectors.length, 26);
    const types = new Set(vectors.map((v) => TYPE[v.message.type]));
    assert.deepEqual([...types].sort(), ['E', 'R', 'S', 'e', 'f', 'h', 'n', 'p', 'r', 's']);
  });

  for (const v of vectors) {
    test(`decode ${v.name}`, () => {
      const bytes = hexToBytes(v.wire_hex);
      const expected = vectorMessage(v);
      const whole = decodeMessage(bytes);
      assert.ok(whole, 'complete message');
      assert.equal(whole.length, bytes.length);
      assertSameMessage(whole.msg, expected, 'decodeMessage');
      // The same bytes as one WebSocket message through the frame reader.
      const msgs = new FrameReader().push(bytes);
      assert.equal(msgs.length, 1);
      assertSameMessage(msgs[0], expected, 'FrameReader');
      // Every proper prefix is incomplete, never an error.
      for (let cut = 0; cut < bytes.length; cut++) assert.equal(decodeMessage(bytes.subarray(0, cut)), null);
    });
    if (v.canonical) {
      test(`encode ${v.name}`, () => {
        assert.equal(bytesToHex(encodeMessage(vectorMessage(v))), v.wire_hex);
      });
    }
  }

  test('decode-only vector re-encodes lower-case', () => {
    const v = vectors.find((x) => x.name === 'uppercase-hex-size');
    assert.equal(v.canonical, false);
    const { msg } = decodeMessage(hexToBytes(v.wire_hex));
    assert.equal(msg.size, 10);
    assert.equal(wire(encodeMessage(msg)), 'r0001004echo0000000a0123456789');
  });
});

describe('invalid vectors (shared/vectors/invalid.jsonl)', () => {
  for (const v of readJsonl('invalid.jsonl')) {
    test(`${v.expect}: ${v.name}`, () => {
      const bytes = hexToBytes(v.wire_hex);
      if (v.expect === 'incomplete') {
        assert.equal(decodeMessage(bytes, 0, DEFAULT_MAX_PAYLOAD), null);
        // A frame reader sees a whole WebSocket message: a truncation is invalid there.
        assert.throws(
          () => new FrameReader().push(bytes),
          (e) => e instanceof ProtocolError && e.code === 2,
        );
        return;
      }
      assert.throws(
        () => decodeMessage(bytes, 0, DEFAULT_MAX_PAYLOAD),
        (e) => {
          assert.ok(e instanceof ProtocolError);
          assert.equal(e.isGotalkProtocolError, true);
          assert.equal(e.code, 2);
          assert.equal(e.tooLarge === true, v.expect === 'too-large');
          return true;
        },
      );
      assert.throws(() => new FrameReader().push(bytes), ProtocolError);
    });
  }

  test('size limit is configurable and checked before any payload arrives', () => {
    const header = bytesOf('R000100000100');
    assert.throws(
      () => decodeHeader(header, 0, 255),
      (e) => e.tooLarge === true,
    );
    assert.equal(decodeHeader(header, 0, 256).msg.size, 256);
    assert.throws(
      () => new FrameReader({ maxPayload: 10 }).push(header),
      (e) => e.tooLarge === true,
    );
  });
});

describe('known wire strings from the protocol description', () => {
  const cases = [
    [
      { type: 'r', id: '0001', op: 'echo', payload: '{"message":"Hello World"}' },
      'r0001004echo00000019{"message":"Hello World"}',
    ],
    [{ type: 'R', id: '0001', payload: '{"message":"Hello World"}' }, 'R000100000019{"message":"Hello World"}'],
    [{ type: 'r', id: '0001', op: 'hello', payload: 'world' }, 'r0001005hello00000005world'],
    [
      { type: 'E', id: '0001', payload: '{"error":"Unknown operation \\"echo\\""}' },
      'E000100000026{"error":"Unknown operation \\"echo\\""}',
    ],
    [{ type: 'e', id: '0001', wait: 0, payload: '"service restarting"' }, 'e00010000000000000014"service restarting"'],
    [
      { type: 'e', id: '0001', wait: 5000, payload: '"request rate limit"' },
      'e00010000138800000014"request rate limit"',
    ],
    [{ type: 's', id: '0001', op: 'echo', payload: '{"message":' }, 's0001004echo0000000b{"message":'],
    [{ type: 'p', id: '0001', payload: '"Hello World"}' }, 'p00010000000e"Hello World"}'],
    [{ type: 'p', id: '0001' }, 'p000100000000'],
    [{ type: 'S', id: '0001', payload: '{"message":' }, 'S00010000000b{"message":'],
    [{ type: 'S', id: '0001', payload: '' }, 'S000100000000'],
    [
      { type: 'n', name: 'chat message', payload: '{"message":"Hi","from":"nthn","room":"gonuts"}' },
      'n00cchat message0000002e{"message":"Hi","from":"nthn","room":"gonuts"}',
    ],
    [{ type: 'h', load: 2, time: 1423433370 }, 'h000254d7de9a'],
    [{ type: 'f', code: 1 }, 'f00000001'],
  ];
  for (const [msg, expected] of cases) {
    test(`${expected.slice(0, 24)}`, () => {
      assert.equal(wire(encodeMessage(msg)), expected);
      const { msg: back, length } = decodeMessage(bytesOf(expected));
      assert.equal(length, expected.length);
      assert.equal(wire(encodeMessage(back)), expected);
    });
  }

  test('encodeFrames splits header and payload, and omits an empty payload', () => {
    const frames = encodeFrames({ type: 'r', id: '0001', op: 'echo', payload: 'hi' });
    assert.deepEqual(frames.map(wire), ['r0001004echo00000002', 'hi']);
    assert.deepEqual(encodeFrames({ type: 'S', id: '0001' }).map(wire), ['S000100000000']);
    assert.deepEqual(encodeFrames({ type: 'h', load: 0, time: 0 }).map(wire), ['h000000000000']);
  });

  test('heartbeat and protocol error carry no payload', () => {
    assert.throws(() => encodeHeader({ type: 'h', load: 0, time: 0 }, 1), RangeError);
    assert.throws(() => encodeHeader({ type: 'f', code: 0 }, 1), RangeError);
  });

  test('out-of-range numbers are caller errors', () => {
    assert.throws(() => encodeHeader({ type: 'h', load: 0x10000, time: 0 }), RangeError);
    assert.throws(() => encodeHeader({ type: 'h', load: 0, time: 2 ** 32 }), RangeError);
    assert.throws(() => encodeHeader({ type: 'e', id: '0001', wait: -1 }), RangeError);
    assert.throws(() => encodeHeader({ type: 'R', id: '0001' }, 2 ** 32), RangeError);
    assert.throws(() => encodeHeader({ type: 'f', code: 1.5 }), RangeError);
    assert.equal(wire(encodeHeader({ type: 'f', code: 0xffffffff })), 'fffffffff');
  });

  test('unknown type and malformed IDs are refused by the encoder', () => {
    assert.throws(() => encodeHeader({ type: 'x', id: '0001' }), TypeError);
    assert.throws(() => encodeHeader({ type: 'R', id: '001' }), TypeError);
    assert.throws(() => encodeHeader({ type: 'R', id: '00€1' }), TypeError);
    assert.throws(() => encodeHeader({ type: 'R', id: new Uint8Array(3) }), TypeError);
  });

  test('binary request IDs (Go little-endian counter) round trip byte for byte', () => {
    const id = new Uint8Array([0xff, 0x00, 0x0d, 0x0a]);
    const bytes = encodeMessage({ type: 'R', id, payload: 'x' });
    assert.equal(bytesToHex(bytes.subarray(1, 5)), 'ff000d0a');
    const { msg } = decodeMessage(bytes);
    assert.equal(msg.id, '\xff\x00\r\n');
    assert.equal(bytesToHex(encodeMessage(msg)), bytesToHex(bytes));
  });

  test('readers accept upper-case hex everywhere, writers emit lower-case', () => {
    const { msg } = decodeMessage(bytesOf('e0001000013880000000Aabcdefghij'));
    assert.equal(msg.wait, 5000);
    assert.equal(msg.size, 10);
    assert.equal(decodeMessage(bytesOf('h00FF54D7DE9A')).msg.load, 255);
    assert.equal(decodeMessage(bytesOf('n00Aabcdefghij00000000')).msg.name, 'abcdefghij');
    assert.equal(wire(encodeHeader({ type: 'e', id: '0001', wait: 0xabcdef }, 0xfedcba)), 'e000100abcdef00fedcba');
  });
});

describe('UTF-8 sizes', () => {
  const samples = [
    ['', 0],
    ['plain', 5],
    ['a\u0000b', 3],
    ['\u0000\u0000', 2],
    ['grüß', 6],
    ['😀', 4],
    ['a😀b', 6],
    ['𝄞 clef', 9],
    ['€', 3],
    ['\ud800', 3], // lone surrogate: encoded as U+FFFD
    ['x\udc00y', 5],
    ['日本語', 9],
  ];
  for (const [s, n] of samples) {
    test(`utf8ByteLength(${JSON.stringify(s)}) = ${n}`, () => {
      assert.equal(utf8ByteLength(s), n);
      assert.equal(utf8(s).length, n);
    });
  }

  test('payload sizes count UTF-8 bytes: NUL and non-BMP characters', () => {
    const payload = '"a\u0000😀"';
    const [header, body] = encodeFrames({ type: 'r', id: '0000', op: 'echo', payload });
    assert.equal(payload.length, 6); // UTF-16 units: what gotalk.js would have declared
    assert.equal(body.length, 8);
    assert.equal(wire(header), 'r0000004echo00000008');
    // JSON text escapes NUL; a raw string payload does not.
    const json = JSON.stringify({ s: 'a\u0000😀' });
    assert.equal(
      wire(encodeHeader({ type: 'n', name: 'x', payload: json })),
      `n001x${utf8(json).length.toString(16).padStart(8, '0')}`,
    );
  });

  test("names count UTF-8 bytes: 'grüß'", () => {
    const [header] = encodeFrames({ type: 'r', id: '0001', op: 'grüß' });
    assert.equal(bytesToHex(header), bytesToHex(new Uint8Array([...utf8('r0001006grüß00000000')])));
    const { msg } = decodeMessage(header);
    assert.equal(msg.op, 'grüß');
    const note = encodeMessage({ type: 'n', name: 'grüß 😀', payload: '😀' });
    assert.equal(wire(note.subarray(0, 4)), 'n00b');
    const back = decodeMessage(note).msg;
    assert.equal(back.name, 'grüß 😀');
    assert.equal(back.size, 4);
  });

  test('name length limit is 4095 bytes of UTF-8', () => {
    assert.equal(encodeHeader({ type: 'n', name: 'a'.repeat(MAX_NAME_LENGTH) }).length, 12 + 4095);
    assert.throws(() => encodeHeader({ type: 'n', name: 'a'.repeat(4096) }), RangeError);
    // 2048 two-byte characters: 2048 characters but 4096 bytes.
    assert.throws(() => encodeHeader({ type: 'r', id: '0001', op: 'ß'.repeat(2048) }), RangeError);
    assert.equal(wire(encodeHeader({ type: 'r', id: '0001', op: 'ß'.repeat(2047) }).subarray(5, 8)), 'ffe');
  });

  test('names that are not valid UTF-8 are invalid messages', () => {
    assert.throws(
      () => decodeMessage(bytesOf('n002\xc3\x2800000000')),
      (e) => e.code === 2,
    );
    // A BOM is kept, not stripped.
    assert.equal(decodeMessage(bytesOf('n003\xef\xbb\xbf00000000')).msg.name, '\ufeff');
  });
});

describe('FrameReader (frame-based, liberal)', () => {
  test('header and payload in one message', () => {
    const [m] = new FrameReader().push(bytesOf('R000100000005hello'));
    assert.equal(m.type, 'R');
    assert.equal(wire(m.payload), 'hello');
  });

  test('several frames in one message, including empty payloads and no-payload types', () => {
    const r = new FrameReader();
    const msgs = r.push(bytesOf('S000100000002hiS000100000000h000254d7de9af00000003n001x00000001!'));
    assert.deepEqual(
      msgs.map((m) => [m.type, wire(m.payload)]),
      [
        ['S', 'hi'],
        ['S', ''],
        ['h', ''],
        ['f', ''],
        ['n', '!'],
      ],
    );
    assert.equal(r.awaitingPayload, false);
  });

  test('header alone, then its payload as the next message', () => {
    const r = new FrameReader();
    assert.deepEqual(r.push(bytesOf('r0001004echo00000019')), []);
    assert.equal(r.awaitingPayload, true);
    const [m] = r.push(bytesOf('{"message":"Hello World"}'));
    assert.equal(m.op, 'echo');
    assert.equal(wire(m.payload), '{"message":"Hello World"}');
    assert.equal(r.awaitingPayload, false);
  });

  test('frames before a header that arrives alone at the end of a message', () => {
    const r = new FrameReader();
    const first = r.push(bytesOf('R000100000002hiR000200000003'));
    assert.equal(first.length, 1);
    assert.equal(r.awaitingPayload, true);
    const [second] = r.push(bytesOf('abc'));
    assert.equal(second.id, '0002');
    assert.equal(wire(second.payload), 'abc');
  });

  test('a header with size 0 does not wait for a payload message', () => {
    const r = new FrameReader();
    assert.equal(r.push(bytesOf('r0001004ping00000000')).length, 1);
    assert.equal(r.awaitingPayload, false);
    assert.equal(r.push(bytesOf('R000100000001x')).length, 1);
  });

  test('text messages are UTF-8 encoded before parsing; sizes count bytes', () => {
    const r = new FrameReader();
    r.push('R000100000006');
    const [m] = r.push('grüß');
    assert.equal(new TextDecoder().decode(m.payload), 'grüß');
    assert.equal(r.push('n001x00000004😀')[0].payload.length, 4);
  });

  test('size mismatch after a lone header is invalid: too short and too long', () => {
    for (const next of ['abcd', 'abcdef', 'abcde' + 'R000100000000']) {
      const r = new FrameReader();
      r.push(bytesOf('R000100000005'));
      assert.throws(
        () => r.push(bytesOf(next)),
        (e) => e instanceof ProtocolError && e.code === 2 && /declared 5/.test(e.message),
        next,
      );
    }
  });

  test('gotalk.js miscount: a string with a non-BMP character sized by UTF-16 length is invalid', () => {
    const s = '"😀"'; // 4 UTF-16 units, 6 UTF-8 bytes
    const r = new FrameReader();
    r.push(bytesOf(`R0001${s.length.toString(16).padStart(8, '0')}`));
    assert.throws(
      () => r.push(s),
      (e) => e.code === 2,
    );
  });

  test('truncated header or payload inside a message is invalid', () => {
    assert.throws(
      () => new FrameReader().push(bytesOf('R0001000000')),
      (e) => e.code === 2,
    );
    assert.throws(
      () => new FrameReader().push(bytesOf('R000100000005hel')),
      (e) => e.code === 2,
    );
    assert.throws(
      () => new FrameReader().push(bytesOf('R000100000001xR00')),
      (e) => e.code === 2,
    );
  });

  test('read() delivers the frames before an invalid one, then throws', () => {
    const seen = [];
    assert.throws(() => new FrameReader().read(bytesOf('R000100000001xZ'), (m) => void seen.push(m.id)), ProtocolError);
    assert.deepEqual(seen, ['0001']);
  });

  test('read() stops when the callback returns false', () => {
    const seen = [];
    new FrameReader().read(bytesOf('R000100000001xR000200000001y'), (m) => {
      seen.push(m.id);
      return false;
    });
    assert.deepEqual(seen, ['0001']);
  });

  test('an empty message between frames is ignored', () => {
    const r = new FrameReader();
    assert.deepEqual(r.push(new Uint8Array(0)), []);
    assert.equal(r.push(bytesOf('R000100000001x')).length, 1);
  });

  test('accepts ArrayBuffer and typed array views', () => {
    const bytes = bytesOf('xxR000100000001y').subarray(2);
    assert.equal(new FrameReader().push(bytes.slice().buffer)[0].id, '0001');
    assert.equal(new FrameReader().push(new DataView(bytes.buffer, 2))[0].id, '0001');
  });
});

describe('version', () => {
  test('encode and parse', () => {
    assert.equal(wire(encodeVersion()), '01');
    assert.equal(wire(encodeVersion(0x2a)), '2a');
    assert.equal(parseVersion(bytesOf('01')), 1);
    assert.equal(parseVersion(bytesOf('0A')), 10);
    assert.equal(parseVersion(bytesOf('1')), -1);
    assert.equal(parseVersion(bytesOf('x1')), -1);
  });

  test('codec object exposes the pure functions', () => {
    for (const k of [
      'encodeHeader',
      'encodeFrames',
      'encodeMessage',
      'decodeHeader',
      'decodeMessage',
      'FrameReader',
      'utf8ByteLength',
    ]) {
      assert.equal(typeof codec[k], 'function', k);
    }
  });
});
