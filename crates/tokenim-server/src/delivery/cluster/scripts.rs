//! The Lua scripts the cluster runs in Redis (each atomic there, sent by
//! EVALSHA), and the parsing of the device registry's entries.
//!
//! A registry entry is one field of the hash `{prefix}:dev:{user_id}`: the
//! field is the device ID, the value `node|incarnation|conn|expires_ms`.
//! Times are Redis's own clock (`TIME`), so nodes need no synchronised
//! clocks; an entry whose expiry has passed is offline whatever the hash's
//! own TTL says (Redis 7.0 has no TTL per hash field).

use redis::Script;

/// `now` in ms by Redis's clock, and the expiry parsed from an entry.
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function expiry(v)
  return tonumber(string.match(v, '|(%d+)$')) or 0
end
";

/// KEYS: the user's device hash, this node's user set.
/// ARGV: device, owner (`node|inc|conn|`), ttl ms, user.
/// Writes the entry and answers `{old live entry or '', was the user
/// online (any live entry before)}`.
const REGISTER: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
local was = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if expiry(all[i + 1]) > now then was = 1 end
end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. string.format('%.0f', now + ttl))
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('SADD', KEYS[2], ARGV[4])
if old and expiry(old) <= now then old = false end
return {old or '', was}
";

/// KEYS: the user's device hash, this node's user set.
/// ARGV: device, owner (`node|inc|conn|`), user, this node (`node|inc|`).
/// Removes the entry if this socket still owns it; answers how many live
/// entries the user has left.
const UNREGISTER: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local live, mine = 0, false
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if expiry(all[i + 1]) > now then live = live + 1 end
  if string.sub(all[i + 1], 1, #ARGV[4]) == ARGV[4] then mine = true end
end
if not mine then redis.call('SREM', KEYS[2], ARGV[3]) end
return live
";

/// KEYS: this node's user set, then one device hash per socket.
/// ARGV: ttl ms, then (device, owner, user) per socket.
/// Renews the entries this node still owns (and writes missing ones: a
/// Redis that restarted empty is refilled within one round).
const RENEW: &str = r"
local ttl = tonumber(ARGV[1])
for i = 2, #KEYS do
  local j = 2 + (i - 2) * 3
  local dev, owner = ARGV[j], ARGV[j + 1]
  local cur = redis.call('HGET', KEYS[i], dev)
  if (not cur) or string.sub(cur, 1, #owner) == owner then
    redis.call('HSET', KEYS[i], dev, owner .. string.format('%.0f', now + ttl))
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
    redis.call('SADD', KEYS[1], ARGV[j + 2])
  end
end
return #KEYS - 1
";

/// KEYS: one user's device hash. Answers the live entries as
/// `[device, entry, ...]`.
const LIVE: &str = r"
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if expiry(all[i + 1]) > now then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
";

/// KEYS: device hashes. ARGV: a dead node (`node|inc|`). Removes that node's
/// entries; answers each user's count of live entries left.
const REAP: &str = r"
local out = {}
for i = 1, #KEYS do
  local live = 0
  local all = redis.call('HGETALL', KEYS[i])
  for j = 1, #all, 2 do
    if string.sub(all[j + 1], 1, #ARGV[1]) == ARGV[1] then
      redis.call('HDEL', KEYS[i], all[j])
    elseif expiry(all[j + 1]) > now then
      live = live + 1
    end
  end
  out[i] = live
end
return out
";

/// KEYS: the bucket. ARGV: rate, per ms, burst. A token bucket as
/// `tokenim_core::TokenBucket`: answers 0 when a token was taken, else the
/// ms until one is there.
const BUCKET: &str = r"
local rate, per, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local per_token = per / rate
local b = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(b[1]) or burst
local last = tonumber(b[2]) or now
local elapsed = now - last
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed / per_token)
if now > last then last = now end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1, math.ceil((1 - tokens) * per_token))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'last', string.format('%.0f', last))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * per_token) + 1000)
return wait
";

/// The scripts, hashed once.
pub struct Scripts {
    pub register: Script,
    pub unregister: Script,
    pub renew: Script,
    pub live: Script,
    pub reap: Script,
    pub bucket: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            register: s(REGISTER),
            unregister: s(UNREGISTER),
            renew: s(RENEW),
            live: s(LIVE),
            reap: s(REAP),
            bucket: s(BUCKET),
        }
    }
}

/// Who holds a device: a socket of a node's incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub inc: String,
    pub conn: u64,
}

impl Owner {
    /// The entry's prefix, `node|inc|conn|`.
    pub fn prefix(&self) -> String {
        format!("{}|{}|{}|", self.node, self.inc, self.conn)
    }

    /// Parses `node|inc|conn|expires` (the expiry is ignored).
    pub fn parse(entry: &str) -> Option<Owner> {
        let mut it = entry.split('|');
        let node = it.next()?.to_owned();
        let inc = it.next()?.to_owned();
        let conn = it.next()?.parse().ok()?;
        Some(Owner { node, inc, conn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trip() {
        let o = Owner {
            node: "n-1".into(),
            inc: "ab12".into(),
            conn: 42,
        };
        let entry = format!("{}1700000000000", o.prefix());
        assert_eq!(Owner::parse(&entry), Some(o));
        assert_eq!(Owner::parse("garbage"), None);
    }
}
