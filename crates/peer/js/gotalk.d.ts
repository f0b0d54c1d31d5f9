// Type declarations for gotalk.js — gotalk protocol version 1 over WebSocket.

// ---------------------------------------------------------------------------------------------
// Constants

/** Version of the gotalk protocol this module speaks (1). */
export const PROTOCOL_VERSION: 1;
/** Version of this library. */
export const version: string;

/** Message type bytes as one-character strings. */
export const MsgType: {
  readonly SingleRequest: 'r';
  readonly StreamRequest: 's';
  readonly StreamRequestPart: 'p';
  readonly SingleResult: 'R';
  readonly StreamResult: 'S';
  readonly ErrorResult: 'E';
  readonly RetryResult: 'e';
  readonly Notification: 'n';
  readonly Heartbeat: 'h';
  readonly ProtocolError: 'f';
};

/** ProtocolError codes. */
export const ProtocolErrorCode: {
  readonly Abnormal: 0;
  readonly Unsupported: 1;
  readonly InvalidMessage: 2;
  readonly Timeout: 3;
};

/** Largest operation or notification name, in UTF-8 bytes (4095). */
export const MAX_NAME_LENGTH: number;
/** Largest payload the wire format can express (0xffffffff). */
export const MAX_PAYLOAD_SIZE: number;
/** Default limit for incoming payloads: 16 MiB. */
export const DEFAULT_MAX_PAYLOAD: number;
/** Largest heartbeat load value (0xffff). */
export const HEARTBEAT_MAX_LOAD: number;

/**
 * WebSocket address of the gotalk mount this module was served from (`ws(s)://host/<mount>/`),
 * or `''` when the module was not loaded over http(s).
 */
export const defaultResponderAddress: string;

// ---------------------------------------------------------------------------------------------
// Errors

/** Base class of every error this module creates. */
export class GotalkError extends Error {
  constructor(message: string, props?: Record<string, unknown> & { cause?: unknown });
}

/** The peer answered with an ErrorResult; `message` is the peer's text. */
export class RemoteError extends GotalkError {
  constructor(message: string, payload: Uint8Array);
  readonly isRemoteError: true;
  /** The raw ErrorResult payload. */
  readonly payload: Uint8Array;
}

/** The peer answered with a RetryResult and the request was not (or no longer) retried. */
export class RetryError extends GotalkError {
  readonly isRetryError: true;
  /** Milliseconds the peer asked to wait before retrying. */
  readonly wait: number;
  /** Number of RetryResults received for this request. */
  readonly attempts: number;
  /** The raw RetryResult payload. */
  readonly payload: Uint8Array;
}

/** A gotalk ProtocolError, sent by the peer (`remote`) or detected here. */
export class ProtocolError extends GotalkError {
  constructor(code: number, detail?: string, remote?: boolean);
  readonly isGotalkProtocolError: true;
  /** ProtocolError code: 0 abnormal, 1 unsupported protocol, 2 invalid message, 3 timeout. */
  readonly code: number;
  /** What was wrong, when detected here. */
  readonly detail: string;
  /** True when the peer sent the ProtocolError. */
  readonly remote: boolean;
  /** Set on a declared payload above the size limit. */
  readonly tooLarge?: true;
}

/** The connection is closed, or closed before a result arrived. */
export class ClosedError extends GotalkError {
  readonly isClosedError: true;
  /** WebSocket close code, when the WebSocket closed. */
  readonly wsCode?: number;
  /** WebSocket close reason, when the WebSocket closed. */
  readonly reason?: string;
}

/** Not connected and the send queue is full (or queueing is disabled). */
export class QueueFullError extends GotalkError {
  readonly isQueueFullError: true;
  readonly limit: number;
}

/** A request did not get its result within its timeout. */
export class TimeoutError extends GotalkError {
  readonly isTimeoutError: true;
  readonly timeout: number;
}

/**
 * Authentication with the hub failed: the token provider failed, or the hub refused `auth`
 * (`cause` is then the RemoteError). Emitted as the connection's 'error' event.
 */
export class AuthError extends GotalkError {
  readonly isAuthError: true;
}

// ---------------------------------------------------------------------------------------------
// Codec

/** Request ID: 4 characters, one per byte (U+0000..U+00FF), or 4 bytes. */
export type RequestId = string | Uint8Array;

/** Payload accepted when sending. Strings are encoded as UTF-8. */
export type PayloadInput = Uint8Array | ArrayBuffer | ArrayBufferView | string | null | undefined;

/** A message to encode. `size` may replace `payload` when only the header is wanted. */
export type MessageInput =
  | { type: 'r' | 's'; id: RequestId; op: string; payload?: PayloadInput; size?: number }
  | { type: 'p' | 'R' | 'S' | 'E'; id: RequestId; payload?: PayloadInput; size?: number }
  | { type: 'e'; id: RequestId; wait: number; payload?: PayloadInput; size?: number }
  | { type: 'n'; name: string; payload?: PayloadInput; size?: number }
  | { type: 'h'; load?: number; time: number }
  | { type: 'f'; code: number };

/** A decoded message. `id` holds one character per byte. */
export type Message =
  | { type: 'r' | 's'; id: string; op: string; size: number; payload: Uint8Array }
  | { type: 'p' | 'R' | 'S' | 'E'; id: string; size: number; payload: Uint8Array }
  | { type: 'e'; id: string; wait: number; size: number; payload: Uint8Array }
  | { type: 'n'; name: string; size: number; payload: Uint8Array }
  | { type: 'h'; load: number; time: number; size: 0; payload: Uint8Array }
  | { type: 'f'; code: number; size: 0; payload: Uint8Array };

/** Encode a string as UTF-8. */
export function utf8Encode(s: string): Uint8Array;
/** Decode UTF-8; with `fatal`, invalid input throws instead of becoming U+FFFD. */
export function utf8Decode(bytes: Uint8Array, fatal?: boolean): string;
/** Number of bytes `s` takes as UTF-8. */
export function utf8ByteLength(s: string): number;
/** Bytes of a payload (strings as UTF-8, null/undefined as empty). */
export function toBytes(data: PayloadInput): Uint8Array;

/** Encode the header of `msg` (no payload); `size` defaults to the payload's byte length. */
export function encodeHeader(msg: MessageInput, size?: number): Uint8Array;
/** `[header]` or `[header, payload]`: one WebSocket message each. */
export function encodeFrames(msg: MessageInput): Uint8Array[];
/** Header and payload as one byte string. */
export function encodeMessage(msg: MessageInput): Uint8Array;
/** The two-byte version message (`01`). */
export function encodeVersion(v?: number): Uint8Array;
/** The version in the first two bytes, or -1 when they are not hex digits. */
export function parseVersion(bytes: Uint8Array): number;
/**
 * Decode the header at `offset`: `null` when more bytes are needed; throws ProtocolError (code 2)
 * on invalid input, including a declared payload above `maxPayload` (default 16 MiB).
 */
export function decodeHeader(
  bytes: Uint8Array,
  offset?: number,
  maxPayload?: number,
): { msg: Message; headerLength: number } | null;
/** Decode a whole message from a byte stream: `null` when more bytes are needed. */
export function decodeMessage(
  bytes: Uint8Array,
  offset?: number,
  maxPayload?: number,
): { msg: Message; length: number } | null;

/**
 * Reader for gotalk over WebSocket messages: one or more whole frames per message, or a header
 * alone followed by a message that is exactly its payload. Anything else throws ProtocolError
 * (code 2).
 */
export class FrameReader {
  constructor(options?: { maxPayload?: number });
  /** True when a header arrived alone and its payload message is expected next. */
  readonly awaitingPayload: boolean;
  /** Read one WebSocket message; `onMessage` returning `false` stops reading. */
  read(data: string | ArrayBuffer | ArrayBufferView, onMessage: (msg: Message) => boolean | void): void;
  /** Read one WebSocket message and return its gotalk messages. */
  push(data: string | ArrayBuffer | ArrayBufferView): Message[];
}

/** The pure codec. */
export const codec: {
  readonly encodeHeader: typeof encodeHeader;
  readonly encodeFrames: typeof encodeFrames;
  readonly encodeMessage: typeof encodeMessage;
  readonly encodeVersion: typeof encodeVersion;
  readonly parseVersion: typeof parseVersion;
  readonly decodeHeader: typeof decodeHeader;
  readonly decodeMessage: typeof decodeMessage;
  readonly FrameReader: typeof FrameReader;
  readonly utf8Encode: typeof utf8Encode;
  readonly utf8Decode: typeof utf8Decode;
  readonly utf8ByteLength: typeof utf8ByteLength;
  readonly toBytes: typeof toBytes;
};

// ---------------------------------------------------------------------------------------------
// Streams

/** Single-consumer async iterable of Uint8Array chunks. */
export class ChunkStream implements AsyncIterableIterator<Uint8Array> {
  next(): Promise<IteratorResult<Uint8Array, undefined>>;
  /** Stop consuming; buffered and later chunks are discarded. */
  return(): Promise<IteratorResult<Uint8Array, undefined>>;
  [Symbol.asyncIterator](): this;
  /** All remaining chunks concatenated; rejects when larger than `limit` bytes. */
  bytes(limit?: number): Promise<Uint8Array>;
  /** All remaining chunks as UTF-8 text. */
  text(): Promise<string>;
  /** All remaining chunks parsed as JSON (`undefined` when empty). */
  json<T = unknown>(): Promise<T>;
}

/**
 * An outgoing stream request. Read the result with `for await` or with `result`, not both.
 */
export class StreamRequest implements AsyncIterable<Uint8Array> {
  /** Operation name. */
  readonly op: string;
  /** Request ID once started by `write()` or `end()`, else null. */
  readonly id: string | null;
  /** True once the result or an error arrived. */
  readonly finished: boolean;
  /**
   * Send a chunk (the first one starts the request). Returns false when the request already
   * finished. Throws after `end()`, or when not connected and the queue is full.
   */
  write(chunk: PayloadInput): boolean;
  /** End the request stream. */
  end(): void;
  /** The whole result: a single result, or all result chunks concatenated. */
  readonly result: Promise<Uint8Array>;
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array>;
}

// ---------------------------------------------------------------------------------------------
// Handlers

/** Passed to request handlers. */
export interface RequestContext {
  readonly connection: Connection;
  /** Operation name (useful in a fallback handler). */
  readonly op: string;
  /** Request ID (one character per byte). */
  readonly id: string;
}

/** Passed to stream handlers. */
export interface StreamContext extends RequestContext {
  /** Send a result chunk. Empty chunks are ignored. False when the connection is gone. */
  write(chunk: PayloadInput): boolean;
}

/** Passed to notification handlers. */
export interface NotificationContext {
  readonly connection: Connection;
  readonly name: string;
}

export type RequestHandler<In = any, Out = any> = (params: In, ctx: RequestContext) => Out | Promise<Out>;
export type BufferRequestHandler = (payload: Uint8Array, ctx: RequestContext) => PayloadInput | Promise<PayloadInput>;
export type StreamRequestHandler = (
  input: ChunkStream,
  ctx: StreamContext,
) => PayloadInput | void | Promise<PayloadInput | void>;
export type NotificationHandler<In = any> = (value: In, ctx: NotificationContext) => void | Promise<void>;
export type BufferNotificationHandler = (payload: Uint8Array, ctx: NotificationContext) => void | Promise<void>;

export type RegisteredRequestHandler =
  | { kind: 'json'; fn: RequestHandler }
  | { kind: 'buffer'; fn: BufferRequestHandler }
  | { kind: 'stream'; fn: StreamRequestHandler };
export type RegisteredNotificationHandler =
  { kind: 'json'; fn: NotificationHandler } | { kind: 'buffer'; fn: BufferNotificationHandler };

/**
 * Registry of request and notification handlers. The empty name `''` registers a fallback;
 * passing `null` removes a handler.
 */
export class Handlers {
  /** JSON operation: the handler's return value (or Promise) is the result; throw to fail. */
  handle<In = any, Out = any>(op: string, fn: RequestHandler<In, Out> | null): this;
  /** Raw operation. */
  handleBuffer(op: string, fn: BufferRequestHandler | null): this;
  /**
   * Streaming operation. Result chunks go out with `ctx.write`; the return value is sent as a single
   * result when nothing was written, else as the last chunk.
   */
  handleStream(op: string, fn: StreamRequestHandler | null): this;
  /** JSON notification. */
  handleNotification<In = any>(name: string, fn: NotificationHandler<In> | null): this;
  /** Raw notification. */
  handleBufferNotification(name: string, fn: BufferNotificationHandler | null): this;
  /** Alias of `handle` (original gotalk.js name). */
  handleRequest<In = any, Out = any>(op: string, fn: RequestHandler<In, Out> | null): this;
  /** Alias of `handleBuffer` (original gotalk.js name). */
  handleBufferRequest(op: string, fn: BufferRequestHandler | null): this;
  findRequestHandler(op: string): RegisteredRequestHandler | null;
  findNotificationHandler(name: string): RegisteredNotificationHandler | null;
}

/** Handlers used by connections unless given others. */
export const defaultHandlers: Handlers;
export function handle<In = any, Out = any>(op: string, fn: RequestHandler<In, Out> | null): void;
export function handleBuffer(op: string, fn: BufferRequestHandler | null): void;
export function handleStream(op: string, fn: StreamRequestHandler | null): void;
export function handleNotification<In = any>(name: string, fn: NotificationHandler<In> | null): void;
export function handleBufferNotification(name: string, fn: BufferNotificationHandler | null): void;
export { handle as handleRequest, handleBuffer as handleBufferRequest };

// ---------------------------------------------------------------------------------------------
// Events

/** Minimal event emitter. Listener exceptions are reported asynchronously, not thrown. */
export class Emitter<Events extends Record<string, any> = Record<string, any>> {
  on<K extends keyof Events & string>(type: K, fn: (value: Events[K]) => void): this;
  once<K extends keyof Events & string>(type: K, fn: (value: Events[K]) => void): this;
  off<K extends keyof Events & string>(type: K, fn: (value: Events[K]) => void): this;
  addListener<K extends keyof Events & string>(type: K, fn: (value: Events[K]) => void): this;
  removeListener<K extends keyof Events & string>(type: K, fn: (value: Events[K]) => void): this;
  listenerCount(type: keyof Events & string): number;
  emit<K extends keyof Events & string>(type: K, value: Events[K]): boolean;
}

export interface NotificationEvent {
  readonly name: string;
  readonly payload: Uint8Array;
  /** The payload parsed as JSON; `undefined` when empty or not JSON. */
  readonly value: unknown;
}

export interface HeartbeatEvent {
  /** Peer load, 0 (idle) ..= 65535. */
  readonly load: number;
  /** Peer time (whole seconds). */
  readonly time: Date;
}

export interface ConnectionEvents {
  /** The handshake completed (after every reconnect too). */
  open: Connection;
  /** The WebSocket ended: the reason, or null after `close()`. */
  close: Error | ProtocolError | ClosedError | null;
  heartbeat: HeartbeatEvent;
  notification: NotificationEvent;
  /** An error thrown by a notification or subscription handler, or an AuthError. */
  error: unknown;
}

// ---------------------------------------------------------------------------------------------
// Connection

/** Minimal WebSocket interface the connection needs (the browser's WebSocket has it). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

export interface ConnectionOptions {
  /** Handlers for the peer's requests and notifications. Default: `defaultHandlers`. */
  handlers?: Handlers;
  /** WebSocket constructor. Default: `globalThis.WebSocket`. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** URL used when `open()` gets none. */
  url?: string;
  /** Heartbeat interval in ms; 0 disables. Default 20000. */
  heartbeatInterval?: number;
  /** Messages queued while not connected; 0 disables queueing. Default 100. */
  sendBufferLimit?: number;
  /** Retries of a request answered with a RetryResult before it fails. Default 3. */
  maxRetries?: number;
  /** First reconnect delay in ms; doubles per failed attempt. Default 500. */
  reconnectDelay?: number;
  /** Reconnect delay cap in ms. Default 5000. */
  maxReconnectDelay?: number;
  /** Time allowed for the WebSocket to open and the peer's version to arrive; 0 disables. Default 10000. */
  handshakeTimeout?: number;
  /** Default timeout of single requests in ms; 0 (default) means none. */
  requestTimeout?: number;
  /** Largest incoming payload in bytes. Default 16 MiB. */
  maxPayloadSize?: number;
  /** Timer functions (for tests). */
  timers?: Partial<Timers>;
  /**
   * Hub authentication: a token, or a provider called on every (re)connect (with the connection)
   * returning a token or a promise of one (`null`: connect without `auth`). The connection sends
   * `auth` first and everything else only once it succeeded.
   */
  token?: string | TokenProvider;
  /** Refresh the token this many ms before the `expires` of the `auth` result; false: never. Default 30000. */
  tokenRefreshMargin?: number | false;
}

/** Gives the token for `auth`; called on every (re)connect and before the token expires. */
export type TokenProvider = (connection: Connection) => string | null | undefined | Promise<string | null | undefined>;

export interface ConnectOptions extends ConnectionOptions {
  /** Reconnect with back-off (default true); false opens one connection. */
  keepAlive?: boolean;
}

export interface RequestOptions {
  /** Timeout in ms; overrides `requestTimeout`. */
  timeout?: number;
}

export type ConnectionState = 'idle' | 'connecting' | 'authenticating' | 'open' | 'reconnecting' | 'closed';

// ---------------------------------------------------------------------------------------------
// Hub (docs/hub.md)

/** A position in a channel's stream: the offset of the last publication, in its epoch. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** A hub connection's identity. */
export interface ClientInfo {
  user: string;
  client: string;
}

/** A publication on a channel. */
export interface Publication<T = any> {
  offset: number;
  epoch: string;
  data: T;
  /** The publisher, when it was a client. */
  info?: ClientInfo;
}

/** What a subscription handler receives. */
export type Delivery<T = any> =
  | Publication<T>
  /** Someone entered the channel's presence (with `events`). */
  | { join: ClientInfo }
  /** Someone left the channel's presence (with `events`). */
  | { leave: ClientInfo }
  /**
   * Publications before this position were missed and could not be recovered (resubscribing with
   * `recovered: false`, or the hub lost them): reload state; deliveries go on after it.
   */
  | { lost: StreamPosition }
  /** The hub refused or ended the subscription (not sent for `unsubscribe()` or `close()`). */
  | { unsubscribed: string };

export type SubscriptionHandler<T = any> = (
  delivery: Delivery<T>,
  subscription: Subscription<T>,
) => void | Promise<void>;

export interface SubscribeOptions {
  /** Resume: deliver the publications after this position first. */
  since?: StreamPosition;
  /** Enter the channel's presence (needs the presence level). */
  presence?: boolean;
  /** Also deliver `{ join }` / `{ leave }`. */
  events?: boolean;
}

/** The result of `subscribe`. */
export interface SubscribeResult<T = any> {
  offset: number;
  epoch: string;
  /** False when `since` could not be resumed from (then `publications` is empty). */
  recovered: boolean;
  publications: Publication<T>[];
}

export interface PublishOptions {
  /** Not delivered back to this connection. */
  others?: boolean;
}

export interface HistoryOptions {
  /** The publications after this position; the most recent ones without it. */
  since?: StreamPosition;
  /** At most this many. */
  limit?: number;
}

export interface HistoryResult<T = any> {
  publications: Publication<T>[];
  /** The channel's current position. */
  offset: number;
  epoch: string;
  /** With `since`: false when publications after it are gone. */
  complete: boolean;
}

export interface PresenceResult {
  clients: ClientInfo[];
}

/** The result of `auth`. */
export interface AuthResult {
  user: string;
  client: string;
  /** Unix seconds, or null for a token that does not expire. */
  expires: number | null;
}

export interface SubscriptionEvents<T = any> {
  /** Each `subscribe` result (first and after every reconnect). */
  subscribed: SubscribeResult<T>;
  /** Publications were missed: the position deliveries go on from. */
  lost: StreamPosition;
  /** The subscription ended: the reason. */
  unsubscribed: string;
}

export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed';

/** A subscription to a hub channel; see `Connection.subscribe`. */
export class Subscription<T = any> extends Emitter<SubscriptionEvents<T>> {
  /** Made by `Connection.subscribe`. */
  private constructor();
  readonly channel: string;
  readonly state: SubscriptionState;
  /** Position of the last publication delivered (or of the channel when subscribed, or `since`); a copy. */
  readonly position: StreamPosition | null;
  /** The first `subscribe` result; rejects if the subscription ends before it. */
  readonly ready: Promise<SubscribeResult<T>>;
  /** No more deliveries from now on; sends `unsubscribe` when connected. */
  unsubscribe(): Promise<void>;
  publish(data: T, options?: PublishOptions): Promise<StreamPosition>;
  presence(): Promise<PresenceResult>;
  history(options?: HistoryOptions): Promise<HistoryResult<T>>;
}

/** A gotalk connection over WebSocket. */
export class Connection extends Emitter<ConnectionEvents> {
  constructor(options?: ConnectionOptions);
  handlers: Handlers;
  readonly state: ConnectionState;
  /** True when the handshake is done. */
  readonly isOpen: boolean;
  /** The WebSocket URL. */
  readonly url: string;
  /** The current WebSocket, if any. */
  readonly ws: WebSocketLike | null;
  /** Messages waiting for the connection to open. */
  readonly queuedMessages: number;
  /** The last successful `auth` result on the current socket, or null. */
  readonly identity: AuthResult | null;
  /** The live hub subscriptions. */
  readonly subscriptions: Subscription[];

  /** Open one connection (no reconnects). Relative and http(s) URLs become ws(s) URLs. */
  open(url?: string): this;
  /** Open and reconnect as needed: 500 ms doubling to 5 s; at once after a timeout close. */
  openKeepAlive(url?: string): this;
  /** Resolves when open (now or next); rejects if the connection closes for good. */
  whenOpen(): Promise<this>;
  /** Close for good; pending requests and queued messages are rejected. */
  close(): void;
  /** Alias of `close()`. */
  end(): void;

  /** Request with a JSON value; resolves with the JSON-decoded result. */
  request<R = any>(op: string, value?: unknown, options?: RequestOptions): Promise<R>;
  /** Request with a raw payload; resolves with the raw result. */
  bufferRequest(op: string, data?: PayloadInput, options?: RequestOptions): Promise<Uint8Array>;
  /** Notification with a JSON value. Throws QueueFullError / ClosedError when it cannot be sent. */
  notify(name: string, value?: unknown): void;
  /** Notification with a raw payload. Throws QueueFullError / ClosedError when it cannot be sent. */
  bufferNotify(name: string, data?: PayloadInput): void;
  /** A stream request; nothing is sent before the first `write()` or `end()`. */
  streamRequest(op: string): StreamRequest;
  /** Send a heartbeat now; `load` in [0, 1]. False when not open. */
  sendHeartbeat(load?: number): boolean;

  /**
   * Subscribe to a hub channel (one subscription per channel). Sent when open (after `auth`), and
   * again from the last position after every reconnect. Notifications named by the channel go to
   * the subscription instead of the notification handlers.
   */
  subscribe<T = any>(channel: string, handler: SubscriptionHandler<T>, options?: SubscribeOptions): Subscription<T>;
  /** The live subscription to `channel`, or null. */
  getSubscription(channel: string): Subscription | null;
  /** Publish any JSON value; resolves with its position. Queued while not open. */
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<StreamPosition>;
  /** Who is in the channel's presence. */
  presence(channel: string): Promise<PresenceResult>;
  /** The channel's history. */
  history<T = any>(channel: string, options?: HistoryOptions): Promise<HistoryResult<T>>;
  /**
   * Send `auth` now with `token` or the provider's: refreshes the token, or retries a failed
   * authentication. Rejects with AuthError, or ClosedError when not connected.
   */
  authenticate(token?: string): Promise<AuthResult | null>;
}

/** Create a connection and open it (keep-alive unless `options.keepAlive` is false). */
export function connect(url?: string, options?: ConnectOptions): Connection;
/** Alias of `connect` (original gotalk.js name). */
export function connection(url?: string, options?: ConnectOptions): Connection;
