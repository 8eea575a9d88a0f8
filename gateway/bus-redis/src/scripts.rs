//! The two Lua scripts: the append, and the snapshot a feed opens with.
//!
//! Why scripts: Redis runs a script atomically, so assigning a sequence, storing the event
//! and fanning it out happen as one step that no other client can interleave with. That is
//! what makes the fan-out order equal the sequence order, and what makes a sequence read
//! with `GET` a promise that every event up to it is already in its topic stream.
//!
//! Both are sent with `EVALSHA` and loaded on the first `NOSCRIPT` (after a Redis restart,
//! for instance): `redis::Script` does that by itself.

use redis::Script;

/// Appends one event.
///
/// Sets the epoch if the log has none (the client passes a random candidate: Lua in Redis
/// has no good randomness), takes the next sequence, adds the event to its topic stream
/// under the id `<seq>-0` with an exact `MAXLEN`, records the topic, then publishes the
/// message (Pub/Sub) or adds it to the log stream (Xread). Returns `{epoch, seq}`.
///
/// Trimming is recorded by hand: `XADD ... MAXLEN` drops the oldest entries without noting
/// them anywhere (`XINFO STREAM`'s `max-deleted-entry-id` only follows `XDEL`), so before
/// adding, the script reads the id of the newest entry the trim will drop and stores it in
/// the `evicted` hash. In steady state that is one entry per append.
///
/// If a command fails midway (a stream id already taken because someone wrote to our keys),
/// what ran before stays: the sequence may be burnt with no event. Feeds accept such a hole
/// once they have looked for it in the topic streams.
const APPEND: &str = r"
-- KEYS: 1 epoch, 2 seq, 3 topics, 4 evicted, 5 the topic's stream, 6 the log stream (xread)
-- ARGV: 1 candidate epoch, 2 topic, 3 content type name, 4 timestamp (µs, decimal),
--       5 payload, 6 history bound, 7 message meta (timestamp, content type, topic),
--       8 fan-out ('pubsub' or 'xread'), 9 Pub/Sub channel, or the log's rough bound
local function u64be(n)
  local bytes = {}
  for i = 8, 1, -1 do
    bytes[i] = n % 256
    n = math.floor(n / 256)
  end
  return string.char(unpack(bytes))
end

redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local seq = redis.call('INCR', KEYS[2])
local id = string.format('%d-0', seq)
local bound = tonumber(ARGV[6])

local excess = redis.call('XLEN', KEYS[5]) + 1 - bound
if excess > 0 then
  local doomed = redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', excess)
  if #doomed > 0 then
    redis.call('HSET', KEYS[4], ARGV[2], string.match(doomed[#doomed][1], '^%d+'))
  end
end
redis.call('XADD', KEYS[5], 'MAXLEN', bound, id, 'ct', ARGV[3], 'ts', ARGV[4], 'p', ARGV[5])
if bound == 0 then
  redis.call('HSET', KEYS[4], ARGV[2], string.format('%d', seq))
end
redis.call('SADD', KEYS[3], ARGV[2])

local message = string.char(1, #epoch) .. epoch .. u64be(seq) .. ARGV[7] .. ARGV[5]
if ARGV[8] == 'pubsub' then
  redis.call('PUBLISH', ARGV[9], message)
else
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[9], id, 'e', message)
end
return {epoch, seq}
";

/// Reads where the log stands, in one step so that every part describes the same instant:
/// returns `{epoch, head seq, topic names, evicted hash as field/value pairs}`.
///
/// It also sets the epoch if the log has none, and starts a new one when the follower's
/// cursor is in the current epoch but ahead of the head: the log lost events the node had
/// seen (Redis restarted from an AOF that lacked its last writes), and the next appends
/// would reuse their ids for other events. A new epoch makes every node reset instead.
const SNAPSHOT: &str = r"
-- KEYS: 1 epoch, 2 seq, 3 topics, 4 evicted
-- ARGV: 1 candidate epoch, 2 the epoch of the follower's cursor ('' for none), 3 its seq
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local head = redis.call('GET', KEYS[2]) or '0'
if epoch == ARGV[2] and tonumber(ARGV[3]) > tonumber(head) then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
return {epoch, head, redis.call('SMEMBERS', KEYS[3]), redis.call('HGETALL', KEYS[4])}
";

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) append: Script,
    pub(crate) snapshot: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            append: Script::new(APPEND),
            snapshot: Script::new(SNAPSHOT),
        }
    }
}
