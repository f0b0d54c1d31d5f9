// A minimal RFC 6455 WebSocket server on node:http, for end-to-end tests of gotalk.js against a
// real WebSocket client. Single-frame messages only (no fragmentation, no extensions), which is
// all a client sends for small messages. Loopback only, ephemeral port.

import { createServer } from 'node:http';
import { createHash } from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** One accepted WebSocket connection, server side. */
class ServerSocket {
  #socket;
  #buf = Buffer.alloc(0);
  #closed = false;
  /** Messages received: { text: boolean, bytes: Uint8Array } */
  messages = [];
  /** Close frame received from the client: { code, reason } or null. */
  closeFrame = null;
  #waiters = [];
  #closeWaiters = [];

  constructor(socket) {
    this.#socket = socket;
    socket.on('data', (d) => this.#onData(d));
    socket.on('close', () => {
      this.#closed = true;
      for (const w of this.#closeWaiters.splice(0)) w();
      for (const w of this.#waiters.splice(0)) w.reject(new Error('socket closed'));
    });
    socket.on('error', () => {});
  }

  get closed() {
    return this.#closed;
  }

  #onData(d) {
    this.#buf = Buffer.concat([this.#buf, d]);
    for (let guard = 0; guard < 10_000; guard++) {
      const b = this.#buf;
      if (b.length < 2) return;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (!masked) throw new Error('client frames must be masked');
      if (b.length < off + 4 + len) return;
      const mask = b.subarray(off, off + 4);
      const payload = Buffer.from(b.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      this.#buf = b.subarray(off + 4 + len);
      if ((b[0] & 0x80) === 0) throw new Error('fragmented frames are not supported by this test server');
      if (opcode === 1 || opcode === 2) {
        const m = { text: opcode === 1, bytes: new Uint8Array(payload) };
        const w = this.#waiters.shift();
        if (w) w.resolve(m);
        else this.messages.push(m);
      } else if (opcode === 8) {
        this.closeFrame = {
          code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005,
          reason: payload.subarray(2).toString('utf8'),
        };
        this.#sendFrame(8, payload.subarray(0, 2));
        this.#socket.end();
      } else if (opcode === 9) {
        this.#sendFrame(10, payload);
      }
    }
    throw new Error('ws-server: too many frames in one read');
  }

  #sendFrame(opcode, payload) {
    if (this.#closed) return;
    const len = payload.length;
    let header;
    if (len < 126) header = Buffer.from([0x80 | opcode, len]);
    else if (len < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x80 | opcode;
      header[1] = 126;
      header.writeUInt16BE(len, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode;
      header[1] = 127;
      header.writeBigUInt64BE(BigInt(len), 2);
    }
    this.#socket.write(Buffer.concat([header, Buffer.from(payload)]));
  }

  /** Send a binary message (Uint8Array, or a wire string with one character per byte). */
  sendBinary(data) {
    this.#sendFrame(2, typeof data === 'string' ? Buffer.from(data, 'latin1') : Buffer.from(data));
  }

  /** Send a text message (UTF-8). */
  sendText(s) {
    this.#sendFrame(1, Buffer.from(s, 'utf8'));
  }

  /** Next message from the client, waiting up to `ms`. */
  next(ms = 2000) {
    if (this.messages.length) return Promise.resolve(this.messages.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('ws-server: no message in time')), ms);
      this.#waiters.push({
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** Resolves when the TCP connection is closed. */
  whenClosed(ms = 2000) {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('ws-server: socket not closed in time')), ms);
      this.#closeWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Drop the TCP connection without a close frame (network failure). */
  destroy() {
    this.#socket.destroy();
  }
}

/**
 * Start a server on 127.0.0.1 with an ephemeral port. `onConnection(serverSocket, request)` runs
 * for each upgrade. Returns { url, connections, close() }.
 */
export async function startWsServer(onConnection) {
  const connections = [];
  const server = createServer((req, res) => {
    res.writeHead(404).end();
  });
  server.on('upgrade', (req, socket) => {
    const key = req.headers['sec-websocket-key'];
    if (req.headers.upgrade?.toLowerCase() !== 'websocket' || !key) {
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const accept = createHash('sha1')
      .update(key + GUID)
      .digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    socket.setNoDelay(true);
    const ss = new ServerSocket(socket);
    connections.push(ss);
    onConnection?.(ss, req);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}/gotalk/`,
    connections,
    close: () =>
      new Promise((resolve) => {
        for (const c of connections) c.destroy();
        server.close(() => resolve());
      }),
  };
}
