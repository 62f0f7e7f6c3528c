-- One pending refresh per package: a leader marker and the followers that joined it.
-- KEYS: 1 leader marker (string: leader request id, TTL), 2 followers (hash follower id -> info JSON),
--       3 the leader's to-publish hash (follower id -> info JSON, TTL)
-- ARGV: 1 operation, then the operation's arguments (below). No clock: every expiry is a Redis TTL.
local MARKER, FOLLOWERS, TO_PUBLISH = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]

-- Followers live as long as the marker they joined, so their entries vanish with a dead leader
-- (their watchers take over; see worker/stores/coalesce.py).
local function followers_follow_marker()
  local ttl = redis.call('PTTL', MARKER)
  if ttl > 0 then
    extend_pttl(FOLLOWERS, ttl)
  end
end

if op == 'claim' then
  -- ARGV: 2 request id, 3 info JSON, 4 ttl ms
  local request_id, info, ttl_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local leader = redis.call('GET', MARKER)
  if not leader then
    redis.call('SET', MARKER, request_id, 'PX', ttl_ms)
    -- A follower taking over from a dead leader must not be published as its own follower.
    redis.call('HDEL', FOLLOWERS, request_id)
    followers_follow_marker()
    return {'leader', request_id}
  end
  if leader == request_id then
    extend_pttl(MARKER, ttl_ms)
    followers_follow_marker()
    return {'leader', request_id}
  end
  redis.call('HSET', FOLLOWERS, request_id, info)
  followers_follow_marker()
  return {'joined', leader}

elseif op == 'close' then
  -- ARGV: 2 leader id, 3 to-publish ttl ms. Only the current leader closes; anyone gets back
  -- what is still to publish for that leader (a redelivered close after a crash).
  local closed = 0
  if redis.call('GET', MARKER) == ARGV[2] then
    redis.call('DEL', MARKER)
    local entries = redis.call('HGETALL', FOLLOWERS)
    for i = 1, #entries, 2 do
      redis.call('HSET', TO_PUBLISH, entries[i], entries[i + 1])
    end
    redis.call('DEL', FOLLOWERS)
    if redis.call('EXISTS', TO_PUBLISH) == 1 then
      redis.call('PEXPIRE', TO_PUBLISH, tonumber(ARGV[3]))
    end
    closed = 1
  end
  return {closed, redis.call('HGETALL', TO_PUBLISH)}
end
return redis.error_reply('ERR unknown coalesce operation')
