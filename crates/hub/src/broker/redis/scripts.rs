//! The Lua scripts the broker runs. Each runs atomically in Redis, so no
//! other command on the same keys interleaves with it.
//!
//! Numbers cross into Lua as strings and are formatted back with `%.0f`:
//! Lua 5.1 numbers are doubles, exact for integers below 2^53.

use ::redis::Script;

/// Publishes one publication.
///
/// KEYS: 1 meta hash, 2 history stream.
/// ARGV: 1 pub/sub channel, 2 data, 3 epoch to create when the meta is
/// missing, 4 history size, 5 history ttl (ms), 6 meta ttl (ms),
/// 7 `"1"` when a publisher is given (else `"0"`), 8 user, 9 client.
///
/// Returns `{offset, epoch}`.
///
/// A missing meta means a new (or lost) channel: a new epoch starts and any
/// stream left without its meta is dropped, so stream ids (= offsets) start
/// over. The stream is written before the meta's offset moves, so a failing
/// XADD leaves the channel as it was.
const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = string.format('%.0f', tonumber(redis.call('HGET', KEYS[1], 'o') or '0') + 1)
local with_info = ARGV[7] == '1'
if tonumber(ARGV[4]) > 0 then
  local id = offset .. '-0'
  if with_info then
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], id, 'd', ARGV[2], 'u', ARGV[8], 'c', ARGV[9])
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], id, 'd', ARGV[2])
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('HSET', KEYS[1], 'o', offset)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local message
if with_info then
  message = '1P' .. offset .. ':' .. #epoch .. ':' .. #ARGV[8] .. ':' .. #ARGV[9] .. ':'
    .. epoch .. ARGV[8] .. ARGV[9] .. ARGV[2]
else
  message = '1p' .. offset .. ':' .. #epoch .. ':' .. epoch .. ARGV[2]
end
redis.call('PUBLISH', ARGV[1], message)
return {offset, epoch}
"#;

/// Reads a channel's position and history.
///
/// KEYS: 1 meta hash, 2 history stream.
/// ARGV: 1 epoch to create when the meta is missing, 2 meta ttl (ms),
/// 3 `"after"` (XRANGE from ARGV 4) or `"latest"` (XREVRANGE), 4 first
/// stream id wanted, 5 COUNT (`"0"`: no entries).
///
/// Returns `{epoch, offset, entries}`. Creating the epoch on a read gives a
/// fresh channel a position that its first publication continues.
const HISTORY: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
local offset = '0'
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  offset = redis.call('HGET', KEYS[1], 'o') or '0'
end
local entries = {}
if ARGV[5] ~= '0' then
  if ARGV[3] == 'after' then
    entries = redis.call('XRANGE', KEYS[2], ARGV[4], '+', 'COUNT', ARGV[5])
  else
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[5])
  end
end
return {epoch, offset, entries}
"#;

/// Adds or refreshes one presence entry and drops expired ones.
///
/// KEYS: 1 presence hash (client -> user), 2 expiry sorted set (client ->
/// expiry, ms since the Unix epoch by Redis's clock).
/// ARGV: 1 client, 2 user, 3 ttl (ms).
///
/// Both keys expire with their last entry. Redis's clock is the only one
/// used, so nodes with skewed clocks agree on what expired.
const ADD_PRESENCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
local cutoff = string.format('%.0f', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
for i = 1, #gone, 500 do
  redis.call('HDEL', KEYS[1], unpack(gone, i, math.min(i + 499, #gone)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
"#;

/// Lists the live presence entries.
///
/// KEYS: 1 presence hash, 2 expiry sorted set.
///
/// Returns `{clients, users}` (same length; a user is nil when the hash
/// lost the entry). Expired entries are left for the next add to drop.
const PRESENCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local clients = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. string.format('%.0f', now), '+inf')
local users = {}
for i = 1, #clients, 500 do
  local part = redis.call('HMGET', KEYS[1], unpack(clients, i, math.min(i + 499, #clients)))
  for j = 1, #part do
    users[i + j - 1] = part[j]
  end
end
return {clients, users}
"#;

/// The broker's scripts, hashed once. `Script::invoke_async` sends
/// EVALSHA and loads the script on NOSCRIPT (after a Redis restart, say).
pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) history: Script,
    pub(super) add_presence: Script,
    pub(super) presence: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            add_presence: Script::new(ADD_PRESENCE),
            presence: Script::new(PRESENCE),
        }
    }
}
