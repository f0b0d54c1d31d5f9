// gotalk.js — browser (and Node >= 20) client for the gotalk protocol version 1 over WebSocket.
//
// One self-contained ES module, no imports, no build step. Served by the gotalk-peer Rust crate at
// `<mount>/gotalk.js`:
//
//   import * as gotalk from '/gotalk/gotalk.js';
//   gotalk.handle('greet', (params) => ({ greeting: 'Hello ' + params.name }));
//   const c = gotalk.connect();   // keep-alive connection to the mount the module was served from
//   const r = await c.request('echo', { message: 'hi' });
//
// Wire framing over WebSocket: the version `01` is one WebSocket message; every gotalk header is
// one binary WebSocket message and its payload, when not empty, is the next one. Everything is
// sent as binary. Reading is liberal (text or binary, several frames per message), but a header
// that arrived alone must be followed by a message of exactly the declared payload size.

// ---------------------------------------------------------------------------------------------
// Constants

/** Version of the gotalk protocol this module speaks. */
export const PROTOCOL_VERSION = 1;

/** Version of this library. */
export const version = '1.0.0';

/** Message type bytes, as one-character strings. */
export const MsgType = Object.freeze({
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
});

/** ProtocolError codes. */
export const ProtocolErrorCode = Object.freeze({
  Abnormal: 0,
  Unsupported: 1,
  InvalidMessage: 2,
  Timeout: 3,
});

/** Largest operation or notification name, in UTF-8 bytes. */
export const MAX_NAME_LENGTH = 0xfff;
/** Largest payload the wire format can express. */
export const MAX_PAYLOAD_SIZE = 0xffffffff;
/** Default limit for incoming payloads (same as the Rust decoder). */
export const DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024;
/** Largest heartbeat load value. */
export const HEARTBEAT_MAX_LOAD = 0xffff;

const PROTOCOL_ERROR_TEXT = ['abnormal condition', 'unsupported protocol', 'invalid protocol message', 'timeout'];

const T_SREQ = 0x72; // r
const T_STREQ = 0x73; // s
const T_PART = 0x70; // p
const T_SRES = 0x52; // R
const T_STRES = 0x53; // S
const T_ERR = 0x45; // E
const T_RETRY = 0x65; // e
const T_NOTE = 0x6e; // n
const T_HB = 0x68; // h
const T_PERR = 0x66; // f

// ---------------------------------------------------------------------------------------------
// Errors

/** Base class of every error this module creates. */
export class GotalkError extends Error {
  constructor(message, props) {
    super(message, props && props.cause !== undefined ? { cause: props.cause } : undefined);
    this.name = 'GotalkError';
    if (props) {
      for (const k of Object.keys(props)) if (k !== 'cause') this[k] = props[k];
    }
  }
}

/** The peer answered with an ErrorResult; `message` is the peer's text. */
export class RemoteError extends GotalkError {
  constructor(message, payload) {
    super(message, { payload });
    this.name = 'RemoteError';
  }
  get isRemoteError() {
    return true;
  }
}

/**
 * A subclass of GotalkError called `name`, constructed with `(message, props)`: its instances
 * carry `name` as their `name` property and have a getter `is<name>` that returns true.
 */
function errorClass(name) {
  // A class defined under a computed property key takes that key as its name.
  return {
    [name]: class extends GotalkError {
      constructor(message, props) {
        super(message, props);
        this.name = name;
      }
      get [`is${name}`]() {
        return true;
      }
    },
  }[name];
}

/** The peer answered with a RetryResult and the request was not (or no longer) retried. */
export const RetryError = errorClass('RetryError');

/** A gotalk ProtocolError: sent by the peer (`remote`) or detected here. */
export class ProtocolError extends GotalkError {
  constructor(code, detail = '', remote = false) {
    const text = PROTOCOL_ERROR_TEXT[code] ?? `protocol error ${code}`;
    super(detail ? `gotalk: ${text}: ${detail}` : `gotalk: ${text}`);
    this.name = 'ProtocolError';
    /** 0 abnormal, 1 unsupported protocol, 2 invalid message, 3 timeout. */
    this.code = code;
    /** What was wrong, when detected here. */
    this.detail = detail;
    /** True when the peer sent it. */
    this.remote = remote;
  }
  get isGotalkProtocolError() {
    return true;
  }
}

/** The connection is closed (or closed before a result arrived). */
export const ClosedError = errorClass('ClosedError');

/** A message could not be queued: not connected and the send queue is full. */
export const QueueFullError = errorClass('QueueFullError');

/** A request did not get its result in time. */
export const TimeoutError = errorClass('TimeoutError');

/**
 * Authentication with the hub failed: the token provider failed or the `auth` request was refused
 * (`cause` holds the RemoteError). Reported as the connection's 'error' event.
 */
export const AuthError = errorClass('AuthError');

function invalid(detail, props) {
  const e = new ProtocolError(ProtocolErrorCode.InvalidMessage, detail);
  if (props) Object.assign(e, props);
  return e;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 and bytes

const textEncoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const looseDecoder = new TextDecoder('utf-8', { ignoreBOM: true });
const EMPTY = new Uint8Array(0);

/** Encode a string as UTF-8 (lone surrogates become U+FFFD). */
export function utf8Encode(s) {
  return textEncoder.encode(s);
}

/** Decode UTF-8; with `fatal`, invalid input throws a TypeError instead of becoming U+FFFD. */
export function utf8Decode(bytes, fatal = false) {
  return (fatal ? strictDecoder : looseDecoder).decode(bytes);
}

/** Number of bytes `s` takes as UTF-8, counted without encoding. */
export function utf8ByteLength(s) {
  let n = 0;
  const len = s.length;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < len && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3; // BMP character, or a lone surrogate encoded as U+FFFD
  }
  return n;
}

/** Bytes of a payload given as Uint8Array, ArrayBuffer, any ArrayBufferView, string or null. */
export function toBytes(data) {
  if (data == null) return EMPTY;
  if (data instanceof Uint8Array) return data;
  if (typeof data === 'string') return textEncoder.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`gotalk: expected a Uint8Array, ArrayBuffer, ArrayBufferView or string, got ${typeof data}`);
}

function concatBytes(parts) {
  if (parts.length === 0) return EMPTY;
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Codec

const HEX_DIGITS = textEncoder.encode('0123456789abcdef');

function putHex(buf, off, value, width) {
  for (let i = off + width - 1; i >= off; i--) {
    buf[i] = HEX_DIGITS[value & 15];
    value >>>= 4;
  }
}

function getHex(buf, off, width, field) {
  let v = 0;
  for (let i = off; i < off + width; i++) {
    const c = buf[i];
    let d;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x37;
    else throw invalid(`${field}: byte 0x${c.toString(16).padStart(2, '0')} is not a hex digit`);
    v = v * 16 + d;
  }
  return v;
}

function checkUint(value, max, field) {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`gotalk: ${field} must be an integer in [0, ${max}], got ${value}`);
  }
}

function putId(buf, off, id) {
  if (typeof id === 'string') {
    if (id.length !== 4) throw new TypeError(`gotalk: request ID must be 4 bytes, got ${JSON.stringify(id)}`);
    for (let i = 0; i < 4; i++) {
      const c = id.charCodeAt(i);
      if (c > 0xff) throw new TypeError(`gotalk: request ID characters must be in U+0000..U+00FF`);
      buf[off + i] = c;
    }
  } else if (id instanceof Uint8Array && id.length === 4) {
    buf.set(id, off);
  } else {
    throw new TypeError('gotalk: request ID must be a 4-character string or a Uint8Array of length 4');
  }
}

function nameBytes(name, what) {
  if (typeof name !== 'string') throw new TypeError(`gotalk: ${what} must be a string`);
  const b = textEncoder.encode(name);
  if (b.length > MAX_NAME_LENGTH) {
    throw new RangeError(`gotalk: ${what} is ${b.length} bytes of UTF-8; the maximum is ${MAX_NAME_LENGTH}`);
  }
  return b;
}

/**
 * Encode the header of `msg` (no payload). `size` is the payload size; it defaults to the byte
 * length of `msg.payload` or to `msg.size`.
 *
 * msg: { type: 'r'|'s', id, op } | { type: 'p'|'R'|'S'|'E', id } | { type: 'e', id, wait }
 *    | { type: 'n', name } | { type: 'h', load, time } | { type: 'f', code }
 * `id` is a 4-character string (one character per byte, U+0000..U+00FF) or a 4-byte Uint8Array.
 */
export function encodeHeader(msg, size) {
  if (size === undefined) size = msg.payload != null ? toBytes(msg.payload).length : (msg.size ?? 0);
  const t = msg.type;
  let buf;
  switch (t) {
    case 'r':
    case 's': {
      checkUint(size, MAX_PAYLOAD_SIZE, 'payload size');
      const name = nameBytes(msg.op ?? '', 'operation name');
      buf = new Uint8Array(16 + name.length);
      buf[0] = t === 'r' ? T_SREQ : T_STREQ;
      putId(buf, 1, msg.id);
      putHex(buf, 5, name.length, 3);
      buf.set(name, 8);
      putHex(buf, 8 + name.length, size, 8);
      return buf;
    }
    case 'p':
    case 'R':
    case 'S':
    case 'E':
      checkUint(size, MAX_PAYLOAD_SIZE, 'payload size');
      buf = new Uint8Array(13);
      buf[0] = t.charCodeAt(0);
      putId(buf, 1, msg.id);
      putHex(buf, 5, size, 8);
      return buf;
    case 'e':
      checkUint(size, MAX_PAYLOAD_SIZE, 'payload size');
      checkUint(msg.wait ?? 0, 0xffffffff, 'wait');
      buf = new Uint8Array(21);
      buf[0] = T_RETRY;
      putId(buf, 1, msg.id);
      putHex(buf, 5, msg.wait ?? 0, 8);
      putHex(buf, 13, size, 8);
      return buf;
    case 'n': {
      checkUint(size, MAX_PAYLOAD_SIZE, 'payload size');
      const name = nameBytes(msg.name ?? '', 'notification name');
      buf = new Uint8Array(12 + name.length);
      buf[0] = T_NOTE;
      putHex(buf, 1, name.length, 3);
      buf.set(name, 4);
      putHex(buf, 4 + name.length, size, 8);
      return buf;
    }
    case 'h':
      if (size !== 0) throw new RangeError('gotalk: a heartbeat has no payload');
      checkUint(msg.load ?? 0, HEARTBEAT_MAX_LOAD, 'heartbeat load');
      checkUint(msg.time, 0xffffffff, 'heartbeat time');
      buf = new Uint8Array(13);
      buf[0] = T_HB;
      putHex(buf, 1, msg.load ?? 0, 4);
      putHex(buf, 5, msg.time, 8);
      return buf;
    case 'f':
      if (size !== 0) throw new RangeError('gotalk: a protocol error has no payload');
      checkUint(msg.code, 0xffffffff, 'protocol error code');
      buf = new Uint8Array(9);
      buf[0] = T_PERR;
      putHex(buf, 1, msg.code, 8);
      return buf;
    default:
      throw new TypeError(`gotalk: unknown message type ${JSON.stringify(t)}`);
  }
}

/**
 * Encode `msg` as WebSocket messages: `[header]` or `[header, payload]` (payload when not empty).
 */
export function encodeFrames(msg) {
  const payload = toBytes(msg.payload);
  const header = encodeHeader(msg, payload.length);
  return payload.length === 0 ? [header] : [header, payload];
}

/** Encode `msg` as one contiguous byte string (header followed by payload), as on a byte stream. */
export function encodeMessage(msg) {
  return concatBytes(encodeFrames(msg));
}

/** The two-byte version message (`01`). */
export function encodeVersion(v = PROTOCOL_VERSION) {
  checkUint(v, 0xff, 'version');
  const b = new Uint8Array(2);
  putHex(b, 0, v, 2);
  return b;
}

/** Parse the two hex digits at the start of `bytes`; -1 if they are not hex digits. */
export function parseVersion(bytes) {
  if (bytes.length < 2) return -1;
  try {
    return getHex(bytes, 0, 2, 'version');
  } catch {
    return -1;
  }
}

function latin1(buf, off, n) {
  let s = '';
  for (let i = off; i < off + n; i++) s += String.fromCharCode(buf[i]);
  return s;
}

function decodeName(buf, off, n, what) {
  if (n === 0) return '';
  try {
    return strictDecoder.decode(buf.subarray(off, off + n));
  } catch {
    throw invalid(`${what} is not valid UTF-8`);
  }
}

function checkSize(size, maxPayload) {
  if (size > maxPayload) {
    throw invalid(`declared payload of ${size} bytes exceeds the limit of ${maxPayload}`, { tooLarge: true });
  }
}

/**
 * The named part of a header that starts at `offset`: at `offset + at` the name length (3 hex
 * digits), the name, then the payload size (8 hex digits), which ends the header. Returns
 * `{ name, size, headerLength }`, or `null` when the `avail` bytes from `offset` end before the
 * header does. `what` names the name in error messages.
 */
function decodeNamed(bytes, offset, avail, at, what, maxPayload) {
  if (avail < at + 3) return null;
  const nameLen = getHex(bytes, offset + at, 3, `${what} length`);
  const headerLength = at + 3 + nameLen + 8;
  if (avail < headerLength) return null;
  const size = getHex(bytes, offset + at + 3 + nameLen, 8, 'payload size');
  checkSize(size, maxPayload);
  return { name: decodeName(bytes, offset + at + 3, nameLen, what), size, headerLength };
}

/**
 * Decode the header starting at `offset`. Returns `{ msg, headerLength }`, or `null` when `bytes`
 * ends before the header does. Throws a ProtocolError (code 2) on an invalid header, including a
 * declared payload above `maxPayload` (the error then has `tooLarge: true`).
 * `msg.id` is a 4-character string holding one byte per character.
 */
export function decodeHeader(bytes, offset = 0, maxPayload = DEFAULT_MAX_PAYLOAD) {
  const avail = bytes.length - offset;
  if (avail < 1) return null;
  const t = bytes[offset];
  switch (t) {
    case T_SREQ:
    case T_STREQ: {
      const named = decodeNamed(bytes, offset, avail, 5, 'operation name', maxPayload);
      if (named === null) return null;
      const { name: op, size, headerLength } = named;
      const msg = { type: t === T_SREQ ? 'r' : 's', id: latin1(bytes, offset + 1, 4), op, size, payload: EMPTY };
      return { msg, headerLength };
    }
    case T_PART:
    case T_SRES:
    case T_STRES:
    case T_ERR: {
      if (avail < 13) return null;
      const size = getHex(bytes, offset + 5, 8, 'payload size');
      checkSize(size, maxPayload);
      const msg = { type: String.fromCharCode(t), id: latin1(bytes, offset + 1, 4), size, payload: EMPTY };
      return { msg, headerLength: 13 };
    }
    case T_RETRY: {
      if (avail < 21) return null;
      const wait = getHex(bytes, offset + 5, 8, 'wait');
      const size = getHex(bytes, offset + 13, 8, 'payload size');
      checkSize(size, maxPayload);
      const msg = { type: 'e', id: latin1(bytes, offset + 1, 4), wait, size, payload: EMPTY };
      return { msg, headerLength: 21 };
    }
    case T_NOTE: {
      const named = decodeNamed(bytes, offset, avail, 1, 'notification name', maxPayload);
      if (named === null) return null;
      const { name, size, headerLength } = named;
      return { msg: { type: 'n', name, size, payload: EMPTY }, headerLength };
    }
    case T_HB: {
      if (avail < 13) return null;
      const load = getHex(bytes, offset + 1, 4, 'heartbeat load');
      const time = getHex(bytes, offset + 5, 8, 'heartbeat time');
      return { msg: { type: 'h', load, time, size: 0, payload: EMPTY }, headerLength: 13 };
    }
    case T_PERR: {
      if (avail < 9) return null;
      const code = getHex(bytes, offset + 1, 8, 'protocol error code');
      return { msg: { type: 'f', code, size: 0, payload: EMPTY }, headerLength: 9 };
    }
    default:
      throw invalid(`unknown message type 0x${t.toString(16).padStart(2, '0')}`);
  }
}

/**
 * Decode one whole message (header and payload) from a byte stream. Returns `{ msg, length }`, or
 * `null` when more bytes are needed. Throws a ProtocolError (code 2) on invalid input.
 */
export function decodeMessage(bytes, offset = 0, maxPayload = DEFAULT_MAX_PAYLOAD) {
  const h = decodeHeader(bytes, offset, maxPayload);
  if (h === null) return null;
  const start = offset + h.headerLength;
  const end = start + h.msg.size;
  if (end > bytes.length) return null;
  if (h.msg.size > 0) h.msg.payload = bytes.slice(start, end);
  return { msg: h.msg, length: end - offset };
}

/**
 * Reader for gotalk over WebSocket messages. Liberal: a message may hold one or more complete
 * frames; a header may also arrive alone, and then the next message must be exactly its payload.
 * Anything else (a truncated header, a truncated payload, a payload message of the wrong size)
 * is an invalid message: a ProtocolError with code 2 is thrown and the reader must not be used
 * any more.
 */
export class FrameReader {
  #pending = null;
  #maxPayload;

  constructor(options = {}) {
    this.#maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  }

  /** True when a header arrived alone and its payload message is expected next. */
  get awaitingPayload() {
    return this.#pending !== null;
  }

  /**
   * Read one WebSocket message, calling `onMessage(msg)` for each complete gotalk message in it,
   * in order. Reading stops early when `onMessage` returns `false`.
   */
  read(data, onMessage) {
    const bytes = typeof data === 'string' ? textEncoder.encode(data) : toBytes(data);
    const pending = this.#pending;
    if (pending !== null) {
      this.#pending = null;
      if (bytes.length !== pending.size) {
        throw invalid(
          `the payload message after a ${JSON.stringify(pending.type)} header is ${bytes.length} bytes, ` +
            `but the header declared ${pending.size}`,
        );
      }
      pending.payload = bytes;
      onMessage(pending);
      return;
    }
    let off = 0;
    while (off < bytes.length) {
      const h = decodeHeader(bytes, off, this.#maxPayload);
      if (h === null) throw invalid(`message ends inside a header (${bytes.length - off} bytes left)`);
      const msg = h.msg;
      off += h.headerLength;
      if (msg.size > 0) {
        const rest = bytes.length - off;
        if (rest === 0) {
          this.#pending = msg;
          return;
        }
        if (rest < msg.size) {
          throw invalid(`message ends inside a payload (${rest} of ${msg.size} bytes)`);
        }
        // A header and its payload in the same message: the payload is its own copy unless it
        // is the whole rest of the message.
        msg.payload = off === 0 && rest === msg.size ? bytes : bytes.slice(off, off + msg.size);
        off += msg.size;
      }
      if (onMessage(msg) === false) return;
    }
  }

  /** Like `read`, but returns the messages as an array. */
  push(data) {
    const out = [];
    this.read(data, (m) => {
      out.push(m);
    });
    return out;
  }
}

/** The pure codec, for tests and tools. */
export const codec = Object.freeze({
  encodeHeader,
  encodeFrames,
  encodeMessage,
  encodeVersion,
  parseVersion,
  decodeHeader,
  decodeMessage,
  FrameReader,
  utf8Encode,
  utf8Decode,
  utf8ByteLength,
  toBytes,
});

// ---------------------------------------------------------------------------------------------
// Async chunk streams

/**
 * A single-consumer async iterable of Uint8Array chunks, used for incoming stream requests and for
 * the results of outgoing stream requests.
 */
export class ChunkStream {
  #chunks = [];
  #head = 0;
  #waiters = [];
  #done = false;
  #error = null;

  /** @internal */
  _push(chunk) {
    if (this.#done) return;
    const w = this.#waiters.shift();
    if (w) w.resolve({ value: chunk, done: false });
    else this.#chunks.push(chunk);
  }

  /** @internal */
  _end() {
    if (this.#done) return;
    this.#done = true;
    for (const w of this.#waiters.splice(0)) w.resolve({ value: undefined, done: true });
  }

  /** @internal */
  _fail(err) {
    if (this.#done) return;
    this.#done = true;
    this.#error = err;
    for (const w of this.#waiters.splice(0)) w.reject(err);
  }

  next() {
    if (this.#head < this.#chunks.length) {
      const value = this.#chunks[this.#head];
      this.#chunks[this.#head++] = undefined;
      if (this.#head === this.#chunks.length) {
        this.#chunks = [];
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Stop consuming: buffered and future chunks are discarded. */
  return() {
    this.#chunks = [];
    this.#head = 0;
    if (!this.#done) this._end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** All remaining chunks, concatenated. `limit` bounds the total size (bytes). */
  async bytes(limit = Infinity) {
    const parts = [];
    let n = 0;
    for (;;) {
      const r = await this.next();
      if (r.done) break;
      n += r.value.length;
      if (n > limit) {
        this.return();
        throw new GotalkError(`gotalk: stream is larger than ${limit} bytes`);
      }
      parts.push(r.value);
    }
    return concatBytes(parts);
  }

  /** All remaining chunks as UTF-8 text. */
  async text() {
    return utf8Decode(await this.bytes());
  }

  /** All remaining chunks parsed as JSON (`undefined` when empty). */
  async json() {
    return parseJson(await this.bytes(), 'stream');
  }
}

function parseJson(bytes, what) {
  if (bytes.length === 0) return undefined;
  try {
    return JSON.parse(looseDecoder.decode(bytes));
  } catch (e) {
    throw new GotalkError(`gotalk: invalid JSON in ${what}: ${e.message}`, { cause: e });
  }
}

function jsonPayload(value) {
  const s = JSON.stringify(value === undefined ? null : value);
  return s === undefined ? 'null' : s;
}

function errorText(err) {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  try {
    return String(err);
  } catch {
    return 'error';
  }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/**
 * A registry of request and notification handlers. Registering for the empty name `''` installs a
 * fallback used when no handler for the exact name exists. Registering `null` removes a handler.
 */
export class Handlers {
  #requests = new Map();
  #notifications = new Map();

  #setRequest(op, kind, fn) {
    if (typeof op !== 'string') throw new TypeError('gotalk: operation name must be a string');
    if (fn == null) return void this.#requests.delete(op);
    if (typeof fn !== 'function') throw new TypeError('gotalk: handler must be a function');
    this.#requests.set(op, { kind, fn });
  }

  #setNotification(name, kind, fn) {
    if (typeof name !== 'string') throw new TypeError('gotalk: notification name must be a string');
    if (fn == null) return void this.#notifications.delete(name);
    if (typeof fn !== 'function') throw new TypeError('gotalk: handler must be a function');
    this.#notifications.set(name, { kind, fn });
  }

  /** JSON operation: `fn(params, ctx)` returns the result value (or a Promise of it); throw to fail. */
  handle(op, fn) {
    this.#setRequest(op, 'json', fn);
    return this;
  }

  /** Raw operation: `fn(bytes, ctx)` returns a Uint8Array, ArrayBuffer, string or null. */
  handleBuffer(op, fn) {
    this.#setRequest(op, 'buffer', fn);
    return this;
  }

  /**
   * Streaming operation: `fn(input, ctx)` where `input` is an async iterable of request chunks.
   * Send result chunks with `ctx.write(chunk)`; what `fn` returns is sent as a single result when
   * nothing was written, else as the last chunk before the end of the result stream.
   */
  handleStream(op, fn) {
    this.#setRequest(op, 'stream', fn);
    return this;
  }

  /** JSON notification: `fn(value, ctx)`. */
  handleNotification(name, fn) {
    this.#setNotification(name, 'json', fn);
    return this;
  }

  /** Raw notification: `fn(bytes, ctx)`. */
  handleBufferNotification(name, fn) {
    this.#setNotification(name, 'buffer', fn);
    return this;
  }

  /** `{ kind, fn }` for `op`, the fallback, or `null`. */
  findRequestHandler(op) {
    return this.#requests.get(op) ?? this.#requests.get('') ?? null;
  }

  /** `{ kind, fn }` for `name`, the fallback, or `null`. */
  findNotificationHandler(name) {
    return this.#notifications.get(name) ?? this.#notifications.get('') ?? null;
  }
}

// Names of the original gotalk.js.
Handlers.prototype.handleRequest = Handlers.prototype.handle;
Handlers.prototype.handleBufferRequest = Handlers.prototype.handleBuffer;

/** The handlers connections use unless given others. */
export const defaultHandlers = new Handlers();

/** Register a JSON operation handler on `defaultHandlers`. */
export function handle(op, fn) {
  defaultHandlers.handle(op, fn);
}
/** Register a raw operation handler on `defaultHandlers`. */
export function handleBuffer(op, fn) {
  defaultHandlers.handleBuffer(op, fn);
}
/** Register a streaming operation handler on `defaultHandlers`. */
export function handleStream(op, fn) {
  defaultHandlers.handleStream(op, fn);
}
/** Register a JSON notification handler on `defaultHandlers`. */
export function handleNotification(name, fn) {
  defaultHandlers.handleNotification(name, fn);
}
/** Register a raw notification handler on `defaultHandlers`. */
export function handleBufferNotification(name, fn) {
  defaultHandlers.handleBufferNotification(name, fn);
}
export { handle as handleRequest, handleBuffer as handleBufferRequest };

// ---------------------------------------------------------------------------------------------
// Events

function reportLater(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
  else
    setTimeout(() => {
      throw err;
    }, 0);
}

/** Minimal event emitter: `on`, `once`, `off`, `emit`. Listener exceptions are reported, not thrown. */
export class Emitter {
  #listeners = new Map();

  on(type, fn) {
    let list = this.#listeners.get(type);
    if (!list) this.#listeners.set(type, (list = []));
    list.push(fn);
    return this;
  }

  once(type, fn) {
    const wrapper = (v) => {
      this.off(type, wrapper);
      fn.call(this, v);
    };
    wrapper.listener = fn;
    return this.on(type, wrapper);
  }

  off(type, fn) {
    const list = this.#listeners.get(type);
    if (list) {
      const i = list.findIndex((l) => l === fn || l.listener === fn);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  listenerCount(type) {
    return this.#listeners.get(type)?.length ?? 0;
  }

  emit(type, value) {
    const list = this.#listeners.get(type);
    if (!list || list.length === 0) return false;
    for (const fn of list.slice()) {
      try {
        fn.call(this, value);
      } catch (e) {
        reportLater(e);
      }
    }
    return true;
  }
}
Emitter.prototype.addListener = Emitter.prototype.on;
Emitter.prototype.removeListener = Emitter.prototype.off;

// ---------------------------------------------------------------------------------------------
// Connection

/**
 * WebSocket address of the gotalk mount this module was served from (`ws(s)://host/<mount>/`),
 * or `''` when it was not loaded over http(s).
 */
export const defaultResponderAddress = (() => {
  try {
    const u = new URL('.', import.meta.url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return '';
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
  } catch {
    return '';
  }
})();

/**
 * This client handles retry results and incoming stream requests, which the original gotalk.js did
 * not; it says so with `?caps=retry,stream` so a server that refuses them to old browser clients
 * (ours does, by default) sends them to this one. Servers that do not know the parameter ignore it.
 */
const CAPABILITIES = 'retry,stream';

function resolveUrl(url) {
  const s = url == null || url === '' ? defaultResponderAddress : String(url);
  if (!s) throw new TypeError('gotalk: no URL given and no default responder address');
  const base = /^wss?:/i.test(s) ? undefined : globalThis.location?.href;
  const u = base ? new URL(s, base) : new URL(s);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (!u.searchParams.has('caps')) u.search = (u.search ? `${u.search}&` : '?') + `caps=${CAPABILITIES}`;
  return u.href;
}

const defaultTimers = Object.freeze({
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h),
  now: () => Date.now(),
});

const WS_OPEN = 1;
/** Longest delay `setTimeout` takes (2^31 - 1 ms, about 24.8 days); longer ones fire at once. */
const MAX_TIMER_DELAY = 2 ** 31 - 1;
const VERSION_BYTES = encodeVersion(PROTOCOL_VERSION);
const ID_SPACE = 36 ** 4;
const STREAM_ID_SPACE = 36 ** 3;

/**
 * A gotalk connection over WebSocket. Create with `connect(url, options)` or `new Connection(options)`
 * followed by `open(url)` (single connection) or `openKeepAlive(url)` (reconnects).
 *
 * States: 'idle' → 'connecting' → ('authenticating' →) 'open' → ('reconnecting' → 'connecting' …) →
 * 'closed'; 'authenticating' only with a token provider (`options.token`), see `authenticate()`.
 * Events: 'open' (connection), 'close' (Error | null), 'heartbeat' ({ load, time }),
 * 'notification' ({ name, payload, value }), 'error' (errors thrown by notification and subscription
 * handlers, and AuthErrors).
 *
 * Hub API (channels of a gotalk-hub server, see docs/hub.md): `subscribe()`, `publish()`,
 * `presence()`, `history()`, `authenticate()`.
 */
export class Connection extends Emitter {
  #opts;
  #timers;
  #WebSocket;
  #handlers;
  #url = '';
  #state = 'idle';
  #keepAlive = false;
  #ws = null;
  #gen = 0;
  #reader = null;
  #versionReceived = false;
  #backoff;
  #queue = [];
  #pending = new Map(); // our requests: id -> entry
  #incoming = new Map(); // peer's stream requests: id -> ChunkStream | null (rejected)
  #nextId = 0;
  #nextStreamId = 0;
  #handshakeTimer = null;
  #heartbeatTimer = null;
  #reconnectTimer = null;
  #openWaiters = [];
  #subs = new Map(); // hub subscriptions: channel -> Subscription
  #tokenProvider = null;
  #identity = null;
  #authTimer = null;
  #subInternal = {
    forget: (sub) => {
      if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
    },
    report: (err) => this.#handlerError(err),
    isOpen: () => this.#state === 'open',
  };

  constructor(options = {}) {
    super();
    this.#opts = {
      heartbeatInterval: options.heartbeatInterval ?? 20000,
      sendBufferLimit: options.sendBufferLimit ?? 100,
      maxRetries: options.maxRetries ?? 3,
      reconnectDelay: options.reconnectDelay ?? 500,
      maxReconnectDelay: options.maxReconnectDelay ?? 5000,
      handshakeTimeout: options.handshakeTimeout ?? 10000,
      requestTimeout: options.requestTimeout ?? 0,
      maxPayloadSize: options.maxPayloadSize ?? DEFAULT_MAX_PAYLOAD,
      tokenRefreshMargin: options.tokenRefreshMargin ?? 30000,
    };
    if (options.token != null) {
      const t = options.token;
      if (typeof t === 'function') this.#tokenProvider = t;
      else if (typeof t === 'string') this.#tokenProvider = () => t;
      else throw new TypeError('gotalk: options.token must be a string or a function returning a token');
    }
    this.#timers = { ...defaultTimers, ...options.timers };
    this.#WebSocket = options.WebSocket ?? null;
    this.#handlers = options.handlers ?? defaultHandlers;
    this.#backoff = this.#opts.reconnectDelay;
    if (options.url != null) this.#url = String(options.url);
  }

  /** Handlers serving the peer's requests and notifications. */
  get handlers() {
    return this.#handlers;
  }
  set handlers(h) {
    if (!(h instanceof Handlers)) throw new TypeError('gotalk: handlers must be a Handlers instance');
    this.#handlers = h;
  }

  /** 'idle' | 'connecting' | 'authenticating' | 'open' | 'reconnecting' | 'closed' */
  get state() {
    return this.#state;
  }

  /** True when the handshake is done and messages go straight to the peer. */
  get isOpen() {
    return this.#state === 'open';
  }

  /** WebSocket URL in use. */
  get url() {
    return this.#url;
  }

  /** The current WebSocket, if any. */
  get ws() {
    return this.#ws;
  }

  /** Number of messages waiting to be sent until the connection opens. */
  get queuedMessages() {
    return this.#queue.length;
  }

  /** The result of the last successful `auth` on this socket (`{ user, client, expires }`), or null. */
  get identity() {
    return this.#identity;
  }

  /** The live hub subscriptions. */
  get subscriptions() {
    return [...this.#subs.values()];
  }

  /** Open one connection; no reconnects. Messages sent before it opens are queued. */
  open(url) {
    return this.#start(url, false);
  }

  /** Open and keep open: reconnect with exponential back-off (500 ms doubling to 5 s by default). */
  openKeepAlive(url) {
    return this.#start(url, true);
  }

  /** Promise resolved when the connection is (or next becomes) open; rejected if it closes for good. */
  whenOpen() {
    if (this.#state === 'open') return Promise.resolve(this);
    if (this.#state === 'closed') return Promise.reject(new ClosedError('gotalk: connection is closed'));
    return new Promise((resolve, reject) => this.#openWaiters.push({ resolve, reject }));
  }

  /** Close for good: stops reconnecting; pending requests and queued messages are rejected. */
  close() {
    if (this.#state === 'closed') return;
    if (this.#reconnectTimer !== null) {
      this.#timers.clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
    }
    this.#keepAlive = false;
    this.#drop(null, new ClosedError('gotalk: connection closed by close()'));
  }

  // -- hub --------------------------------------------------------------------------------------

  /**
   * Subscribe to a hub channel: sends `subscribe` now when open, else once open (after `auth`).
   * `handler(delivery, subscription)` gets, in offset order and each once, the publications
   * `{ offset, epoch, data, info }` (those after `options.since` first), with `events` also
   * `{ join }` / `{ leave }`, then `{ lost: { offset, epoch } }` when publications were missed and
   * could not be recovered, and `{ unsubscribed: reason }` when the hub refused or ended the
   * subscription. After a reconnect the subscription is sent again from its last position.
   * Notifications named by the channel go to the subscription, not to the notification handlers.
   */
  subscribe(channel, handler, options = {}) {
    checkChannel(channel);
    if (typeof handler !== 'function') throw new TypeError('gotalk: the subscription handler must be a function');
    if (this.#state === 'closed') throw new ClosedError('gotalk: connection is closed');
    if (this.#subs.has(channel)) throw new GotalkError(`gotalk: already subscribed to ${JSON.stringify(channel)}`);
    const sub = new Subscription(this, channel, handler, options ?? {}, this.#subInternal);
    this.#subs.set(channel, sub);
    if (this.#state === 'open') sub._send();
    return sub;
  }

  /** Live subscription to `channel`, if any. */
  getSubscription(channel) {
    return this.#subs.get(channel) ?? null;
  }

  /**
   * Publish `data` (any JSON) on a hub channel; resolves with its position `{ offset, epoch }`.
   * `options.others`: not delivered back to this connection. Queued while not open.
   */
  publish(channel, data, options) {
    try {
      checkChannel(channel);
    } catch (e) {
      return Promise.reject(e);
    }
    const req = { channel, data: data === undefined ? null : data };
    if (options?.others) req.others = true;
    return this.request('publish', req);
  }

  /** Who is in a hub channel's presence: resolves with `{ clients: [{ user, client }] }`. */
  presence(channel) {
    try {
      checkChannel(channel);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.request('presence', { channel });
  }

  /**
   * A hub channel's history: the publications after `options.since` (or the last ones), at most
   * `options.limit`. Resolves with `{ publications, offset, epoch, complete }`.
   */
  history(channel, options = {}) {
    let req;
    try {
      checkChannel(channel);
      req = { channel };
      if (options?.since != null) req.since = checkPosition(options.since, 'since');
      if (options?.limit != null) {
        if (!Number.isSafeInteger(options.limit) || options.limit < 0) {
          throw new TypeError('gotalk: history limit must be a non-negative integer');
        }
        req.limit = options.limit;
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return this.request('history', req);
  }

  /**
   * Send `auth` now with `token`, or with a token from the provider (`options.token`): refreshes
   * the token of an authenticated connection, or retries after a failed authentication (then
   * resubscribes and sends what was queued). Resolves with `{ user, client, expires }`; rejects
   * with an AuthError. Rejects with a ClosedError when not connected: the provider is called
   * again on the next connect anyway.
   */
  authenticate(token) {
    if (this.#state !== 'open' && this.#state !== 'authenticating') {
      return Promise.reject(new ClosedError('gotalk: not connected; the token provider is called on the next connect'));
    }
    if (token === undefined && this.#tokenProvider === null) {
      return Promise.reject(new TypeError('gotalk: authenticate() needs a token, or a provider in options.token'));
    }
    return this.#authenticate(this.#gen, token, false);
  }

  /**
   * `auth` on socket `gen`: with `token`, or the provider's when undefined. With `report`, failures
   * are also emitted as 'error'. Leaves 'authenticating' for 'open' on success.
   */
  async #authenticate(gen, token, report) {
    const fail = (err) => {
      if (report && gen === this.#gen) this.#handlerError(err);
      return err;
    };
    if (token === undefined) {
      try {
        token = await this.#tokenProvider(this);
      } catch (e) {
        throw fail(new AuthError(`gotalk: the token provider failed: ${errorText(e)}`, { cause: e }));
      }
    }
    if (gen !== this.#gen) throw new ClosedError('gotalk: the connection closed during authentication');
    if (token == null) {
      // No token: carry on anonymously.
      if (this.#state === 'authenticating') this.#ready(gen);
      return null;
    }
    if (typeof token !== 'string' || token === '') {
      throw fail(
        new AuthError(`gotalk: the token provider returned ${token === '' ? 'an empty string' : typeof token}`),
      );
    }
    let result;
    try {
      result = await this.#call(
        'auth',
        jsonPayload({ token }),
        (bytes) => parseJson(bytes, 'the result of "auth"'),
        undefined,
        true,
      );
    } catch (e) {
      // The socket went away: the next one authenticates anew.
      if (gen !== this.#gen) throw e;
      throw fail(new AuthError(`gotalk: authentication failed: ${errorText(e)}`, { cause: e }));
    }
    if (gen !== this.#gen) throw new ClosedError('gotalk: the connection closed during authentication');
    const previous = this.#identity;
    this.#identity = result ?? null;
    this.#scheduleRefresh(gen, result?.expires, previous?.expires);
    if (this.#state === 'authenticating') this.#ready(gen);
    return result;
  }

  /** Refresh the token `tokenRefreshMargin` ms before `expires` (Unix seconds), if it moved on. */
  #scheduleRefresh(gen, expires, previous) {
    if (this.#authTimer !== null) this.#timers.clearTimeout(this.#authTimer);
    this.#authTimer = null;
    const margin = this.#opts.tokenRefreshMargin;
    if (this.#tokenProvider === null || margin === false || typeof expires !== 'number') return;
    // A provider that hands out the same token again would make this loop: stop until it changes.
    if (typeof previous === 'number' && expires <= previous) return;
    this.#armRefresh(gen, expires * 1000 - margin);
  }

  /** Refresh at time `at` (ms); timers cannot wait longer than MAX_TIMER_DELAY at once. */
  #armRefresh(gen, at) {
    const delay = Math.min(MAX_TIMER_DELAY, Math.max(0, at - this.#timers.now()));
    this.#authTimer = this.#timers.setTimeout(() => {
      this.#authTimer = null;
      if (gen !== this.#gen || this.#state !== 'open') return;
      if (this.#timers.now() < at) this.#armRefresh(gen, at);
      else this.#authenticate(gen, undefined, true).catch(() => {});
    }, delay);
  }

  /** Alias of close(), the original gotalk.js name. */
  end() {
    this.close();
  }

  /** Send a request with a JSON-encoded value; resolves with the JSON-decoded result. */
  request(op, value, options) {
    let payload;
    try {
      payload = jsonPayload(value);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#call(op, payload, (bytes) => parseJson(bytes, `the result of "${op}"`), options);
  }

  /** Send a request with a raw payload; resolves with the raw result. */
  bufferRequest(op, data, options) {
    return this.#call(op, data, (bytes) => bytes, options);
  }

  /** Send a notification with a JSON-encoded value. Throws when it cannot be sent or queued. */
  notify(name, value) {
    this.bufferNotify(name, jsonPayload(value));
  }

  /** Send a notification with a raw payload. Throws when it cannot be sent or queued. */
  bufferNotify(name, data) {
    this.#submit(encodeFrames({ type: 'n', name, payload: data }), null, false);
  }

  /** Create a stream request for `op`. Nothing is sent before the first `write()` or `end()`. */
  streamRequest(op) {
    if (typeof op !== 'string') throw new TypeError('gotalk: operation name must be a string');
    return new StreamRequest(this, op, new ChunkStream());
  }

  /** Send a heartbeat now; `load` in [0, 1]. Returns false when not open (heartbeats are not queued). */
  sendHeartbeat(load = 0) {
    if (this.#state !== 'open' && this.#state !== 'authenticating') return false;
    const l = Math.round(Math.min(1, Math.max(0, Number(load) || 0)) * HEARTBEAT_MAX_LOAD);
    const time = Math.floor(this.#timers.now() / 1000) >>> 0;
    return this.#write([encodeHeader({ type: 'h', load: l, time })]);
  }

  // -- lifecycle --------------------------------------------------------------------------------

  #start(url, keepAlive) {
    if (
      this.#state === 'connecting' ||
      this.#state === 'authenticating' ||
      this.#state === 'open' ||
      this.#state === 'reconnecting'
    ) {
      throw new GotalkError(`gotalk: connection is already ${this.#state}`);
    }
    this.#url = resolveUrl(url ?? this.#url);
    this.#WebSocket ??= globalThis.WebSocket ?? null;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('gotalk: no WebSocket implementation; pass options.WebSocket');
    }
    this.#keepAlive = keepAlive;
    this.#backoff = this.#opts.reconnectDelay;
    this.#connect();
    return this;
  }

  #connect() {
    this.#reconnectTimer = null;
    const gen = ++this.#gen;
    this.#state = 'connecting';
    this.#versionReceived = false;
    this.#reader = new FrameReader({ maxPayload: this.#opts.maxPayloadSize });
    let ws;
    try {
      ws = new this.#WebSocket(this.#url);
    } catch (e) {
      this.#drop(new ClosedError(`gotalk: cannot open WebSocket: ${errorText(e)}`, { cause: e }));
      return;
    }
    this.#ws = ws;
    try {
      ws.binaryType = 'arraybuffer';
    } catch {
      // Some implementations have a fixed binary type; incoming data is normalized anyway.
    }
    ws.onopen = () => {
      if (gen === this.#gen) this.#write([VERSION_BYTES]);
    };
    ws.onmessage = (ev) => {
      if (gen === this.#gen) this.#onData(ev.data, gen);
    };
    // Browsers follow an error with a close event (code 1006). Node 20's WebSocket (undici) fires
    // only the error when a connection attempt fails, and would leave the reconnect waiting for the
    // handshake timeout; so the error ends the socket here, and a close event after it is ignored.
    ws.onerror = (ev) => {
      if (gen !== this.#gen) return;
      const detail = typeof ev?.message === 'string' && ev.message !== '' ? `: ${ev.message}` : '';
      this.#drop(new ClosedError(`gotalk: WebSocket closed (code 1006${detail})`, { wsCode: 1006, reason: '' }));
    };
    ws.onclose = (ev) => {
      if (gen !== this.#gen) return;
      const code = ev?.code ?? 1006;
      const reason = ev?.reason ?? '';
      this.#drop(
        new ClosedError(`gotalk: WebSocket closed (code ${code}${reason ? `: ${reason}` : ''})`, {
          wsCode: code,
          reason,
        }),
      );
    };
    const t = this.#opts.handshakeTimeout;
    if (t > 0) {
      this.#handshakeTimer = this.#timers.setTimeout(() => {
        this.#handshakeTimer = null;
        if (gen === this.#gen && !this.#versionReceived)
          this.#fail(ProtocolErrorCode.Timeout, `no handshake within ${t} ms`);
      }, t);
    }
  }

  #onHandshake(gen) {
    this.#backoff = this.#opts.reconnectDelay;
    this.#stopSocketTimers();
    if (this.#tokenProvider !== null) {
      // `auth` goes first; subscriptions and queued messages wait for it (see #ready).
      this.#state = 'authenticating';
      this.#scheduleHeartbeat(gen);
      this.#authenticate(gen, undefined, true).catch(() => {});
      return;
    }
    this.#state = 'open';
    this.#scheduleHeartbeat(gen);
    this.#ready(gen);
  }

  /** Open for business: resubscribe, send what was queued, tell the waiters. */
  #ready(gen) {
    this.#state = 'open';
    for (const sub of [...this.#subs.values()]) {
      sub._send();
      if (gen !== this.#gen) return;
    }
    this.#flush();
    if (gen !== this.#gen) return;
    for (const w of this.#openWaiters.splice(0)) w.resolve(this);
    this.emit('open', this);
  }

  #scheduleHeartbeat(gen) {
    const interval = this.#opts.heartbeatInterval;
    if (!(interval > 0)) return;
    this.#heartbeatTimer = this.#timers.setTimeout(() => {
      this.#heartbeatTimer = null;
      if (gen !== this.#gen) return;
      this.sendHeartbeat(0);
      if (gen === this.#gen) this.#scheduleHeartbeat(gen);
    }, interval);
  }

  /** Local protocol error: tell the peer, then drop the connection. */
  #fail(code, detail) {
    this.#failWith(new ProtocolError(code, detail, false));
  }

  #failWith(err) {
    const ws = this.#ws;
    if (ws && ws.readyState === WS_OPEN) {
      try {
        ws.send(encodeHeader({ type: 'f', code: err.code }));
      } catch {
        // closing anyway
      }
    }
    this.#drop(err);
  }

  /**
   * End the current socket. `err` is what the 'close' event carries (null after close()).
   * With keep-alive, schedules a reconnect; else rejects everything pending with `finalErr`.
   */
  #drop(err, finalErr) {
    const ws = this.#ws;
    this.#gen++;
    this.#ws = null;
    this.#reader = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        if (ws.readyState < 2) ws.close(1000);
      } catch {
        // already closing
      }
    }
    this.#stopSocketTimers();
    if (this.#authTimer !== null) this.#timers.clearTimeout(this.#authTimer);
    this.#authTimer = null;
    this.#identity = null;
    const hadSocket = ws !== null || this.#state === 'connecting';
    const wasReconnecting = this.#state === 'reconnecting';

    const lost = new ClosedError('gotalk: connection closed before the result arrived', { cause: err ?? undefined });
    // `auth` requests belong to their socket, even while waiting to be retried.
    for (const entry of [...this.#pending.values()]) if (entry.inFlight || entry.direct) this.#settle(entry, lost);
    for (const input of this.#incoming.values()) input?._fail(lost);
    this.#incoming.clear();

    const reconnect = this.#keepAlive;
    this.#state = reconnect ? 'reconnecting' : 'closed';
    if (!reconnect) {
      const final = finalErr ?? new ClosedError('gotalk: connection is closed', { cause: err ?? undefined });
      for (const entry of [...this.#pending.values()]) this.#settle(entry, final);
      this.#queue = [];
      for (const w of this.#openWaiters.splice(0)) w.reject(final);
      for (const sub of [...this.#subs.values()]) sub._end('connection closed', final, false);
    }
    if (hadSocket || wasReconnecting) this.emit('close', err);
    if (reconnect && this.#state === 'reconnecting' && this.#reconnectTimer === null) {
      const immediate = err instanceof ProtocolError && err.remote && err.code === ProtocolErrorCode.Timeout;
      const delay = immediate ? 0 : this.#backoff;
      if (!immediate) this.#backoff = Math.min(this.#backoff * 2, this.#opts.maxReconnectDelay);
      this.#reconnectTimer = this.#timers.setTimeout(() => this.#connect(), delay);
    }
  }

  #stopSocketTimers() {
    if (this.#handshakeTimer !== null) this.#timers.clearTimeout(this.#handshakeTimer);
    if (this.#heartbeatTimer !== null) this.#timers.clearTimeout(this.#heartbeatTimer);
    this.#handshakeTimer = this.#heartbeatTimer = null;
  }

  // -- sending ----------------------------------------------------------------------------------

  #write(frames) {
    const ws = this.#ws;
    try {
      for (const f of frames) ws.send(f);
      return true;
    } catch (e) {
      this.#drop(new ClosedError(`gotalk: WebSocket send failed: ${errorText(e)}`, { cause: e }));
      return false;
    }
  }

  /**
   * Send now when open, else queue (bounded). `part`: a stream part that must not mark the entry
   * sent. `direct` (auth): also sent while authenticating, when everything else waits.
   */
  #submit(frames, entry, part, direct = false) {
    if (this.#state === 'open' || (direct && this.#state === 'authenticating')) {
      if (!this.#write(frames)) throw new ClosedError('gotalk: connection is closed');
      if (entry && !part) entry.inFlight = true;
      return;
    }
    if (this.#state === 'closed') throw new ClosedError('gotalk: connection is closed');
    const limit = this.#opts.sendBufferLimit;
    if (this.#queue.length >= limit) {
      throw new QueueFullError(
        limit > 0
          ? `gotalk: not connected and the send queue is full (${limit} messages)`
          : 'gotalk: not connected and queueing is disabled (sendBufferLimit is 0)',
        { limit },
      );
    }
    this.#queue.push({ frames, entry, part });
  }

  #flush() {
    const q = this.#queue;
    this.#queue = [];
    for (let i = 0; i < q.length; i++) {
      if (this.#state !== 'open') {
        // The socket went away while flushing: keep the rest, in order.
        this.#queue = q.slice(i).concat(this.#queue);
        return;
      }
      const { frames, entry, part } = q[i];
      if (entry && entry.done) continue;
      if (this.#write(frames) && entry && !part) entry.inFlight = true;
    }
  }

  /** Reply on the socket a request came in on; dropped when that socket is gone. */
  #reply(gen, msg) {
    if (gen !== this.#gen || (this.#state !== 'open' && this.#state !== 'authenticating')) return false;
    return this.#write(encodeFrames(msg));
  }

  #allocId(stream) {
    const space = stream ? STREAM_ID_SPACE : ID_SPACE;
    for (let i = 0; i < space; i++) {
      let id;
      if (stream) {
        id = '!' + this.#nextStreamId.toString(36).padStart(3, '0');
        this.#nextStreamId = (this.#nextStreamId + 1) % space;
      } else {
        id = this.#nextId.toString(36).padStart(4, '0');
        this.#nextId = (this.#nextId + 1) % space;
      }
      if (!this.#pending.has(id)) return id;
    }
    throw new GotalkError('gotalk: too many requests in flight');
  }

  /** Registers `entry` as pending under its ID and sends its first `frames`; unregisters it if that throws. */
  #register(entry, frames) {
    this.#pending.set(entry.id, entry);
    try {
      this.#submit(frames, entry, false, entry.direct);
    } catch (e) {
      this.#pending.delete(entry.id);
      throw e;
    }
  }

  #call(op, data, decode, options, direct = false) {
    return new Promise((resolve, reject) => {
      const id = this.#allocId(false);
      const frames = encodeFrames({ type: 'r', id, op, payload: data });
      const entry = {
        stream: null,
        id,
        op,
        frames,
        decode,
        resolve,
        reject,
        inFlight: false,
        done: false,
        attempts: 0,
        chunks: null,
        timer: null,
        retryTimer: null,
        direct,
      };
      this.#register(entry, frames);
      const timeout = options?.timeout ?? this.#opts.requestTimeout;
      if (timeout > 0) {
        entry.timer = this.#timers.setTimeout(() => {
          entry.timer = null;
          this.#settle(entry, new TimeoutError(`gotalk: no result for "${op}" within ${timeout} ms`, { timeout }));
        }, timeout);
      }
    });
  }

  /** @internal used by StreamRequest */
  _startStream(req, payload) {
    const id = this.#allocId(true);
    const entry = {
      stream: req._results,
      id,
      op: req.op,
      inFlight: false,
      done: false,
      timer: null,
      retryTimer: null,
    };
    const frames = encodeFrames({ type: 's', id, op: req.op, payload });
    this.#register(entry, frames);
    return entry;
  }

  /** @internal used by StreamRequest */
  _streamPart(entry, payload) {
    if (entry.done) return false;
    this.#submit(encodeFrames({ type: 'p', id: entry.id, payload }), entry, true);
    return true;
  }

  #settle(entry, err, bytes) {
    if (entry.done) return;
    entry.done = true;
    entry.inFlight = false;
    if (this.#pending.get(entry.id) === entry) this.#pending.delete(entry.id);
    if (entry.timer !== null) this.#timers.clearTimeout(entry.timer);
    if (entry.retryTimer !== null) this.#timers.clearTimeout(entry.retryTimer);
    if (entry.stream) {
      if (err) entry.stream._fail(err);
      else entry.stream._end();
      return;
    }
    if (err) return entry.reject(err);
    let value;
    try {
      value = entry.decode(bytes);
    } catch (e) {
      return entry.reject(e);
    }
    entry.resolve(value);
  }

  // -- receiving --------------------------------------------------------------------------------

  #onData(data, gen) {
    let bytes;
    if (typeof data === 'string') bytes = textEncoder.encode(data);
    else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else
      return this.#fail(
        ProtocolErrorCode.Abnormal,
        'unsupported WebSocket message data (set binaryType to "arraybuffer")',
      );

    if (!this.#versionReceived) {
      const v = parseVersion(bytes);
      if (v !== PROTOCOL_VERSION) {
        return this.#fail(
          ProtocolErrorCode.Unsupported,
          v < 0
            ? 'the first message is not a protocol version'
            : `peer speaks version ${v}, we speak ${PROTOCOL_VERSION}`,
        );
      }
      this.#versionReceived = true;
      this.#onHandshake(gen);
      if (gen !== this.#gen || bytes.length === 2) return;
      bytes = bytes.subarray(2);
    }
    try {
      this.#reader.read(bytes, (msg) => this.#onMessage(msg, gen));
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      if (gen === this.#gen) this.#failWith(e);
    }
  }

  /** Returns false once the socket is gone, so the reader stops. */
  #onMessage(msg, gen) {
    if (gen !== this.#gen) return false;
    switch (msg.type) {
      case 'r':
        this.#onRequest(msg, gen);
        break;
      case 's':
        this.#onStreamRequest(msg, gen);
        break;
      case 'p':
        this.#onStreamPart(msg);
        break;
      case 'R':
      case 'S':
      case 'E':
      case 'e':
        this.#onResult(msg);
        break;
      case 'n':
        this.#onNotification(msg);
        break;
      case 'h':
        this.emit('heartbeat', { load: msg.load, time: new Date(msg.time * 1000) });
        break;
      case 'f':
        this.#drop(new ProtocolError(msg.code, '', true));
        break;
    }
    return gen === this.#gen;
  }

  #onResult(msg) {
    const entry = this.#pending.get(msg.id);
    if (!entry || !entry.inFlight) return; // not pending (any more): dropped silently
    const payload = msg.payload;
    switch (msg.type) {
      case 'R':
        if (entry.stream) {
          if (payload.length) entry.stream._push(payload);
          this.#settle(entry, null);
        } else this.#settle(entry, null, payload);
        break;
      case 'S':
        if (payload.length) {
          if (entry.stream) entry.stream._push(payload);
          else (entry.chunks ??= []).push(payload);
        } else this.#settle(entry, null, entry.stream ? undefined : concatBytes(entry.chunks ?? []));
        break;
      case 'E':
        this.#settle(entry, new RemoteError(utf8Decode(payload), payload));
        break;
      case 'e':
        this.#onRetry(entry, msg);
        break;
    }
  }

  #onRetry(entry, msg) {
    const reason = utf8Decode(msg.payload);
    const props = { wait: msg.wait, attempts: (entry.attempts ?? 0) + 1, payload: msg.payload };
    if (entry.stream) {
      // The chunks already written are not kept, so a stream request cannot be replayed.
      this.#settle(
        entry,
        new RetryError(`gotalk: stream request "${entry.op}" refused, retry after ${msg.wait} ms: ${reason}`, props),
      );
      return;
    }
    entry.attempts++;
    if (entry.attempts > this.#opts.maxRetries) {
      this.#settle(
        entry,
        new RetryError(
          `gotalk: request "${entry.op}" still refused after ${this.#opts.maxRetries} retries: ${reason}`,
          props,
        ),
      );
      return;
    }
    entry.inFlight = false;
    entry.chunks = null;
    entry.retryTimer = this.#timers.setTimeout(() => {
      entry.retryTimer = null;
      if (entry.done) return;
      try {
        this.#submit(entry.frames, entry, false, entry.direct);
      } catch (e) {
        this.#settle(entry, e);
      }
    }, msg.wait);
  }

  #onRequest(msg, gen) {
    const handler = this.#handlers.findRequestHandler(msg.op);
    if (!handler) {
      this.#reply(gen, { type: 'E', id: msg.id, payload: `unknown operation "${msg.op}"` });
      return;
    }
    this.#serve(gen, msg.id, msg.op, handler, msg.payload);
  }

  #onStreamRequest(msg, gen) {
    if (this.#incoming.has(msg.id)) {
      this.#fail(
        ProtocolErrorCode.InvalidMessage,
        `stream request ID ${JSON.stringify(msg.id)} reused while in flight`,
      );
      return;
    }
    const handler = this.#handlers.findRequestHandler(msg.op);
    if (!handler) {
      // Remember the ID so the parts the requester already sent are dropped, not fatal.
      this.#incoming.set(msg.id, null);
      this.#reply(gen, { type: 'E', id: msg.id, payload: `unknown operation "${msg.op}"` });
      return;
    }
    const input = new ChunkStream();
    if (msg.payload.length) input._push(msg.payload);
    this.#incoming.set(msg.id, input);
    this.#serve(gen, msg.id, msg.op, handler, input);
  }

  #onStreamPart(msg) {
    if (!this.#incoming.has(msg.id)) {
      this.#fail(ProtocolErrorCode.InvalidMessage, `stream request part for unknown ID ${JSON.stringify(msg.id)}`);
      return;
    }
    const input = this.#incoming.get(msg.id);
    if (msg.payload.length === 0) {
      this.#incoming.delete(msg.id);
      input?._end();
    } else input?._push(msg.payload);
  }

  /** Run a handler for a request (`input` is the payload bytes or a ChunkStream) and reply. */
  async #serve(gen, id, op, handler, input) {
    let streamed = false;
    let finished = false;
    const ctx = { connection: this, op, id };
    if (handler.kind === 'stream') {
      ctx.write = (chunk) => {
        if (finished) throw new GotalkError('gotalk: write() after the stream handler finished');
        const b = toBytes(chunk);
        if (b.length === 0) return true; // an empty S would end the stream
        streamed = true;
        return this.#reply(gen, { type: 'S', id, payload: b });
      };
    }
    try {
      let result;
      if (handler.kind === 'stream') {
        let stream = input;
        if (!(stream instanceof ChunkStream)) {
          stream = new ChunkStream();
          if (input.length) stream._push(input);
          stream._end();
        }
        try {
          result = await handler.fn(stream, ctx);
        } finally {
          stream.return(); // the handler is done reading: drop further parts
        }
      } else {
        const bytes = input instanceof ChunkStream ? await input.bytes(this.#opts.maxPayloadSize) : input;
        if (handler.kind === 'buffer') result = await handler.fn(bytes, ctx);
        else result = jsonPayload(await handler.fn(parseJson(bytes, `the parameters of "${op}"`), ctx));
      }
      finished = true;
      const out = toBytes(result);
      if (streamed) {
        if (out.length) this.#reply(gen, { type: 'S', id, payload: out });
        this.#reply(gen, { type: 'S', id, payload: EMPTY });
      } else this.#reply(gen, { type: 'R', id, payload: out });
    } catch (err) {
      finished = true;
      this.#reply(gen, { type: 'E', id, payload: errorText(err) });
    }
  }

  #onNotification(msg) {
    const { name, payload } = msg;
    if (this.listenerCount('notification') > 0) {
      this.emit('notification', {
        name,
        payload,
        get value() {
          try {
            return parseJson(payload, 'notification');
          } catch {
            return undefined;
          }
        },
      });
    }
    const sub = this.#subs.get(name);
    if (sub) return void sub._receive(payload);
    const handler = this.#handlers.findNotificationHandler(name);
    if (!handler) return;
    const ctx = { connection: this, name };
    try {
      const r =
        handler.kind === 'buffer'
          ? handler.fn(payload, ctx)
          : handler.fn(parseJson(payload, `notification "${name}"`), ctx);
      if (r && typeof r.then === 'function') r.then(undefined, (e) => this.#handlerError(e));
    } catch (e) {
      this.#handlerError(e);
    }
  }

  #handlerError(err) {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else reportLater(err);
  }
}

/**
 * An outgoing stream request. The first `write()` sends the request with its first chunk; later
 * writes send parts; `end()` ends the request stream. Read the result either with
 * `for await (const chunk of req)` or with `await req.result` (all chunks concatenated) — not both.
 * A single result and a streaming result are both supported.
 */
export class StreamRequest {
  #conn;
  #op;
  #entry = null;
  #ended = false;
  #startError = null;
  #result = null;
  /** @internal */
  _results;

  constructor(conn, op, results) {
    this.#conn = conn;
    this.#op = op;
    this._results = results;
  }

  /** Operation name. */
  get op() {
    return this.#op;
  }

  /** Request ID, once the request was started by `write()` or `end()`; else null. */
  get id() {
    return this.#entry?.id ?? null;
  }

  /** True once the result (or an error) arrived; later writes are ignored. */
  get finished() {
    return this.#entry?.done ?? false;
  }

  /**
   * Send a chunk. Returns false (and sends nothing) when the request already finished. Throws after
   * `end()`, or when not connected and the send queue is full.
   */
  write(chunk) {
    if (this.#startError) throw this.#startError;
    if (this.#ended) throw new GotalkError('gotalk: write() after end()');
    const b = toBytes(chunk);
    if (this.#entry === null) {
      try {
        this.#entry = this.#conn._startStream(this, b);
      } catch (e) {
        this.#startError = e;
        this._results._fail(e);
        throw e;
      }
      return true;
    }
    if (b.length === 0) return !this.#entry.done; // an empty part would end the stream
    return this.#conn._streamPart(this.#entry, b);
  }

  /** End the request stream (sends the request first if nothing was written). */
  end() {
    if (this.#ended) return;
    if (this.#entry === null) this.write(EMPTY);
    this.#ended = true;
    this.#conn._streamPart(this.#entry, EMPTY);
  }

  /** Promise of the whole result (single result, or all stream chunks concatenated). */
  get result() {
    return (this.#result ??= this._results.bytes());
  }

  [Symbol.asyncIterator]() {
    return this._results;
  }
}

// ---------------------------------------------------------------------------------------------
// Hub subscriptions

function checkChannel(channel) {
  if (typeof channel !== 'string' || channel === '') {
    throw new TypeError('gotalk: a channel name must be a non-empty string');
  }
}

/** A copy of a stream position `{ offset, epoch }`, checked. */
function checkPosition(pos, what) {
  if (pos === null || typeof pos !== 'object' || !Number.isSafeInteger(pos.offset) || pos.offset < 0) {
    throw new TypeError(`gotalk: ${what} must be a position { offset, epoch } with a non-negative integer offset`);
  }
  if (typeof pos.epoch !== 'string') throw new TypeError(`gotalk: ${what}.epoch must be a string`);
  return { offset: pos.offset, epoch: pos.epoch };
}

function isPosition(v) {
  return v !== null && typeof v === 'object' && Number.isSafeInteger(v.offset) && typeof v.epoch === 'string';
}

/**
 * A subscription to a hub channel, made by `connection.subscribe(channel, handler, options)`.
 *
 * `position` is the stream position `{ offset, epoch }` of the last publication delivered (or the
 * channel's position when subscribed, or `options.since` before that); after a reconnect the
 * subscription is sent again with it as `since`, so nothing is missed or delivered twice. States:
 * 'subscribing' → 'subscribed' (→ 'subscribing' after a reconnect …) → 'unsubscribed'.
 * Events: 'subscribed' (each `subscribe` result), 'lost' (position), 'unsubscribed' (reason).
 */
export class Subscription extends Emitter {
  #conn;
  #channel;
  #handler;
  #internal;
  #presence;
  #events;
  #position;
  #state = 'subscribing';
  #attempt = 0;
  #buffer = [];
  #subscribedOnce = false;
  #ready;
  #readyResolve;
  #readyReject;

  /** @internal use `connection.subscribe()` */
  constructor(conn, channel, handler, options, internal) {
    super();
    this.#conn = conn;
    this.#channel = channel;
    this.#handler = handler;
    this.#internal = internal;
    this.#presence = options.presence === true;
    this.#events = options.events === true;
    this.#position = options.since == null ? null : checkPosition(options.since, 'since');
    this.#ready = new Promise((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    this.#ready.catch(() => {}); // not awaiting it is fine: failures also reach the handler
  }

  /** The channel name. */
  get channel() {
    return this.#channel;
  }

  /** 'subscribing' | 'subscribed' | 'unsubscribed' */
  get state() {
    return this.#state;
  }

  /** `{ offset, epoch }` of the last publication delivered (see the class comment), or null. */
  get position() {
    return this.#position && { ...this.#position };
  }

  /** Resolves with the first `subscribe` result; rejects if the subscription ends before it. */
  get ready() {
    return this.#ready;
  }

  /**
   * End the subscription: no more deliveries from now on. Sends `unsubscribe` when connected;
   * resolves when the hub confirmed it or the socket went away (the hub then forgets it anyway).
   */
  unsubscribe() {
    if (!this._end('unsubscribe()', null, false)) return Promise.resolve();
    if (!this.#internal.isOpen()) return Promise.resolve();
    return this.#conn.request('unsubscribe', { channel: this.#channel }).then(
      () => undefined,
      (err) => {
        if (!(err instanceof ClosedError)) throw err;
      },
    );
  }

  /** `connection.publish(channel, data, options)`. */
  publish(data, options) {
    return this.#conn.publish(this.#channel, data, options);
  }

  /** `connection.presence(channel)`. */
  presence() {
    return this.#conn.presence(this.#channel);
  }

  /** `connection.history(channel, options)`. */
  history(options) {
    return this.#conn.history(this.#channel, options);
  }

  /** @internal Send `subscribe` from the current position (the connection is open). */
  _send() {
    if (this.#state === 'unsubscribed') return;
    const attempt = ++this.#attempt;
    this.#state = 'subscribing';
    this.#buffer = [];
    const since = this.#position;
    const req = { channel: this.#channel };
    if (since) req.since = { offset: since.offset, epoch: since.epoch };
    if (this.#presence) req.presence = true;
    if (this.#events) req.events = true;
    this.#conn.request('subscribe', req).then(
      (result) => this.#onSubscribed(attempt, since, result),
      (err) => this.#onRefused(attempt, err),
    );
  }

  /** @internal A notification named by the channel. */
  _receive(payload) {
    if (this.#state === 'unsubscribed') return;
    let value;
    try {
      value = parseJson(payload, `a delivery on ${JSON.stringify(this.#channel)}`);
    } catch (e) {
      this.#internal.report(e);
      return;
    }
    // Live deliveries can overtake the subscribe result: they follow its publications.
    if (this.#state === 'subscribing') this.#buffer.push(value);
    else this.#dispatch(value);
  }

  /**
   * @internal End the subscription (false when it already ended). `notify`: tell the handler with
   * `{ unsubscribed: reason }` (the hub ended or refused it, as opposed to this side).
   */
  _end(reason, error, notify) {
    if (this.#state === 'unsubscribed') return false;
    this.#state = 'unsubscribed';
    this.#buffer = null;
    this.#attempt++;
    this.#internal.forget(this);
    if (!this.#subscribedOnce) {
      this.#readyReject(
        error ?? new GotalkError(`gotalk: subscription to ${JSON.stringify(this.#channel)} ended: ${reason}`),
      );
    }
    if (notify) this.#deliver({ unsubscribed: reason }, true);
    this.emit('unsubscribed', reason);
    return true;
  }

  #onSubscribed(attempt, since, result) {
    if (attempt !== this.#attempt || this.#state === 'unsubscribed') return;
    if (!isPosition(result)) {
      this.#onRefused(attempt, new GotalkError('gotalk: invalid result of "subscribe": no offset and epoch'));
      return;
    }
    const buffered = this.#buffer;
    this.#buffer = null;
    this.#state = 'subscribed';
    if (!this.#subscribedOnce) {
      this.#subscribedOnce = true;
      this.#readyResolve(result);
    }
    const current = { offset: result.offset, epoch: result.epoch };
    if (since && result.recovered === false) this.#lost(current);
    for (const p of Array.isArray(result.publications) ? result.publications : []) {
      if (this.#state !== 'subscribed') return;
      this.#publication(p, result.epoch);
    }
    const pos = this.#position;
    if (!pos || pos.epoch !== current.epoch || pos.offset < current.offset) this.#position = current;
    this.emit('subscribed', result);
    for (const value of buffered) {
      if (this.#state !== 'subscribed') return;
      this.#dispatch(value);
    }
  }

  #onRefused(attempt, err) {
    if (attempt !== this.#attempt || this.#state === 'unsubscribed') return;
    // The socket went away: the subscription is sent again on the next one.
    if (err instanceof ClosedError) return;
    this._end(errorText(err), err, true);
  }

  #dispatch(value) {
    if (value === null || typeof value !== 'object') return this.#deliver(value);
    if (typeof value.offset === 'number') return this.#publication(value, null);
    if (isPosition(value.lost)) return this.#lost({ offset: value.lost.offset, epoch: value.lost.epoch });
    if ('unsubscribed' in value) return void this._end(String(value.unsubscribed), null, true);
    this.#deliver(value); // { join }, { leave }, and what later hubs may add
  }

  /** Deliver a publication unless it was delivered already (same epoch, offset not past ours). */
  #publication(p, epoch) {
    if (p === null || typeof p !== 'object' || typeof p.offset !== 'number') return;
    if (typeof p.epoch !== 'string') p = { ...p, epoch };
    const pos = this.#position;
    if (pos && pos.epoch === p.epoch && p.offset <= pos.offset) return;
    this.#position = { offset: p.offset, epoch: p.epoch };
    this.#deliver(p);
  }

  /** Publications up to `position` are gone: carry on from there, and say so. */
  #lost(position) {
    this.#position = position;
    this.#deliver({ lost: { ...position } });
    this.emit('lost', { ...position });
  }

  #deliver(value, final = false) {
    if (this.#state === 'unsubscribed' && !final) return;
    try {
      const r = this.#handler(value, this);
      if (r && typeof r.then === 'function') r.then(undefined, (e) => this.#internal.report(e));
    } catch (e) {
      this.#internal.report(e);
    }
  }
}

/**
 * Create a connection and open it. With `options.keepAlive` (default true) it reconnects with
 * back-off. `url` defaults to the mount this module was served from.
 */
export function connect(url, options = {}) {
  const c = new Connection(options);
  return options.keepAlive === false ? c.open(url) : c.openKeepAlive(url);
}

/** Name of the original gotalk.js: `connection(url?, options?)` is `connect` with keep-alive. */
export const connection = connect;
