// Test doubles for gotalk.js: a scripted WebSocket class and a manual clock.
// Kept outside test/ so that `node --test crates/peer/js/test/` does not run it as a test file.

import { FrameReader } from '../gotalk.js';

const utf8 = new TextEncoder();

/** Bytes of `data` as a string with one character per byte (gotalk wire strings are ASCII). */
export function wire(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/** Bytes of a wire string given with one character per byte. */
export function bytesOf(s) {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new Error(`bytesOf: character U+${c.toString(16)} is not a byte`);
    out[i] = c;
  }
  return out;
}

/** Let queued promise jobs and handler continuations run. */
export function settle() {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A manual clock implementing the `timers` option of Connection: nothing fires until `advance()`.
 */
export class FakeClock {
  #timers = new Map();
  #seq = 0;

  constructor(now = 1_700_000_000_000) {
    this.now = now;
  }

  timers = {
    setTimeout: (fn, ms) => {
      const handle = ++this.#seq;
      this.#timers.set(handle, { at: this.now + Math.max(0, ms), ms, fn, seq: handle });
      return handle;
    },
    clearTimeout: (handle) => {
      this.#timers.delete(handle);
    },
    now: () => this.now,
  };

  /** Delays (ms, as scheduled) of the timers still pending, in firing order. */
  get pendingDelays() {
    return [...this.#timers.values()].sort((a, b) => a.at - b.at || a.seq - b.seq).map((t) => t.ms);
  }

  /** Move time forward by `ms`, firing due timers in order (including ones they schedule). */
  advance(ms) {
    const end = this.now + ms;
    for (let guard = 0; guard < 10_000; guard++) {
      let next = null;
      for (const [h, t] of this.#timers) {
        if (t.at <= end && (next === null || t.at < next[1].at || (t.at === next[1].at && t.seq < next[1].seq))) {
          next = [h, t];
        }
      }
      if (next === null) {
        this.now = end;
        return;
      }
      this.#timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    throw new Error('FakeClock.advance: too many timers fired');
  }
}

/**
 * Returns a fresh WebSocket-like class whose instances are recorded in `Class.instances`. The test
 * plays the server: `accept()`, `receive(data)`, `drop(code)`; `sent` holds what the client sent.
 */
export function makeWebSocketClass() {
  class FakeWebSocket {
    static instances = [];
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.binaryType = 'blob';
      this.sent = [];
      this.closeCall = null;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      FakeWebSocket.instances.push(this);
    }

    send(data) {
      if (this.readyState === 0) throw new Error('InvalidStateError: still connecting');
      if (this.readyState !== 1) return; // browsers drop data sent on a closing socket
      if (typeof data === 'string') this.sent.push({ text: true, bytes: utf8.encode(data) });
      else if (data instanceof ArrayBuffer) this.sent.push({ text: false, bytes: new Uint8Array(data.slice(0)) });
      else if (ArrayBuffer.isView(data)) {
        this.sent.push({ text: false, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice() });
      } else throw new TypeError('FakeWebSocket.send: unsupported data');
    }

    close(code, reason) {
      if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
        throw new Error(`InvalidAccessError: close code ${code} not allowed in browsers`);
      }
      if (this.readyState >= 2) return;
      this.closeCall = { code, reason };
      this.readyState = 3;
      const ev = { code: code ?? 1005, reason: reason ?? '', wasClean: true };
      queueMicrotask(() => this.onclose?.(ev));
    }

    // -- server side --

    /** Complete the WebSocket handshake. */
    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }

    /** Deliver one message to the client; strings are text frames, bytes are binary frames. */
    receive(data) {
      if (this.readyState !== 1) throw new Error('FakeWebSocket.receive: socket not open');
      const payload = typeof data === 'string' ? data : new Uint8Array(data).slice().buffer;
      this.onmessage?.({ data: payload });
    }

    /** Deliver a wire string (one char per byte) as one binary message. */
    receiveWire(s) {
      this.receive(bytesOf(s));
    }

    /** Accept and send the server's version. */
    handshake() {
      this.accept();
      this.receiveWire('01');
    }

    /** The connection goes away (server close or network failure). */
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: false });
    }

    /**
     * The connection attempt fails the way Node 20's WebSocket (undici) reports it: an error event
     * and no close event (the socket even stays CONNECTING). Browsers add a close event: `close`.
     */
    fail({ close = false } = {}) {
      this.onerror?.({ type: 'error', message: 'Received network error or non-101 status code.' });
      if (close) {
        this.readyState = 3;
        this.onclose?.({ code: 1006, reason: '', wasClean: false });
      }
    }

    /** Every message the client sent, as wire strings. */
    get sentWire() {
      return this.sent.map((m) => wire(m.bytes));
    }

    /** The gotalk messages the client sent after its version, decoded. */
    sentMessages() {
      const reader = new FrameReader();
      const out = [];
      for (const m of this.sent.slice(1)) reader.read(m.bytes, (msg) => void out.push(msg));
      return out;
    }
  }
  return FakeWebSocket;
}
