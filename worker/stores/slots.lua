-- Per-provider concurrency cap: leases, and a waiting line ordered by (priority, arrival).
-- KEYS: 1 holders (zset holder -> lease expiry), 2 leases (hash holder -> "<acquired_at> <token>"),
--       3 waiters (zset holder -> priority * 1e13 + seq), 4 waiter deadlines (zset holder -> deadline),
--       5 stats (hash: seq, ewma_hold_s, ewma_gap_s, last_release_at, grants, releases, reclaimed, abandoned)
-- ARGV: 1 operation, 2 now ('' = Redis TIME), then the operation's arguments (below).
local HOLDERS, LEASES, WAITERS, DEADLINES, STATS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op = ARGV[1]
local now = clock(ARGV[2])
local PRIORITY_WEIGHT = 1e13

-- Remove the members of `by_time` (a zset scored by expiry) whose time has come, with their
-- entry in `companion` (removed with `remove_command`), and count them in stats.
local function drop_expired(by_time, companion, remove_command, counter)
  local expired = redis.call('ZRANGEBYSCORE', by_time, '-inf', num(now))
  for _, member in ipairs(expired) do
    redis.call('ZREM', by_time, member)
    redis.call(remove_command, companion, member)
  end
  if #expired > 0 then
    redis.call('HINCRBY', STATS, counter, #expired)
  end
end

-- Dead holders (their lease ran out) and dead waiters (they stopped polling) leave first.
local function reclaim()
  drop_expired(HOLDERS, LEASES, 'HDEL', 'reclaimed')
  drop_expired(DEADLINES, WAITERS, 'ZREM', 'abandoned')
end

local function lease_fields(holder)
  local value = redis.call('HGET', LEASES, holder)
  if not value then
    return nil, nil
  end
  local space = string.find(value, ' ', 1, true)
  return tonumber(string.sub(value, 1, space - 1)), string.sub(value, space + 1)
end

local function keep_alive(lease_ms, waiter_ms, stats_ms)
  extend_pttl(HOLDERS, lease_ms)
  extend_pttl(LEASES, lease_ms)
  extend_pttl(WAITERS, waiter_ms)
  extend_pttl(DEADLINES, waiter_ms)
  redis.call('PEXPIRE', STATS, stats_ms)
end

if op == 'acquire' then
  -- ARGV: 3 holder, 4 limit, 5 priority, 6 lease_s, 7 waiter_ttl_s, 8 new token, 9 key ttl margin ms,
  --       10 stats ttl ms
  local holder, limit, priority = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local lease_s, waiter_ttl_s = tonumber(ARGV[6]), tonumber(ARGV[7])
  local margin_ms, stats_ms = tonumber(ARGV[9]), tonumber(ARGV[10])
  local lease_ms = math.ceil(lease_s * 1000) + margin_ms
  local waiter_ms = math.ceil(waiter_ttl_s * 1000) + margin_ms
  reclaim()
  -- Asking again while holding (a redelivered message) renews and returns the same lease.
  if redis.call('ZSCORE', HOLDERS, holder) then
    redis.call('ZADD', HOLDERS, num(now + lease_s), holder)
    redis.call('ZREM', WAITERS, holder)
    redis.call('ZREM', DEADLINES, holder)
    local acquired, token = lease_fields(holder)
    if not token then
      -- Unreachable while both keys share their TTLs; repaired rather than trusted.
      acquired, token = now, ARGV[8]
      redis.call('HSET', LEASES, holder, num(now) .. ' ' .. token)
    end
    keep_alive(lease_ms, waiter_ms, stats_ms)
    return {'granted', token, num(acquired), num(now + lease_s)}
  end
  local in_use = redis.call('ZCARD', HOLDERS)
  if not redis.call('ZSCORE', WAITERS, holder) then
    -- A waiter keeps its place (and first priority) for as long as it keeps polling.
    local seq = redis.call('HINCRBY', STATS, 'seq', 1)
    redis.call('ZADD', WAITERS, string.format('%.0f', priority * PRIORITY_WEIGHT + seq), holder)
  end
  redis.call('ZADD', DEADLINES, num(now + waiter_ttl_s), holder)
  local rank = redis.call('ZRANK', WAITERS, holder)
  if rank < limit - in_use then
    redis.call('ZREM', WAITERS, holder)
    redis.call('ZREM', DEADLINES, holder)
    redis.call('ZADD', HOLDERS, num(now + lease_s), holder)
    redis.call('HSET', LEASES, holder, num(now) .. ' ' .. ARGV[8])
    redis.call('HINCRBY', STATS, 'grants', 1)
    keep_alive(lease_ms, waiter_ms, stats_ms)
    return {'granted', ARGV[8], num(now), num(now + lease_s)}
  end
  keep_alive(lease_ms, waiter_ms, stats_ms)
  local ewma = redis.call('HGET', STATS, 'ewma_hold_s') or ''
  local gap = redis.call('HGET', STATS, 'ewma_gap_s') or ''
  return {'wait', rank, in_use, redis.call('ZCARD', WAITERS), ewma, gap}

elseif op == 'release' then
  -- ARGV: 3 holder, 4 token, 5 ewma alpha, 6 stats ttl ms, 7 longest gap sample (s).
  -- Idempotent: a second release finds no lease.
  local holder, token, alpha = ARGV[3], ARGV[4], tonumber(ARGV[5])
  local acquired, held_token = lease_fields(holder)
  if held_token ~= token then
    return {0, redis.call('HGET', STATS, 'ewma_hold_s') or ''}
  end
  redis.call('ZREM', HOLDERS, holder)
  redis.call('HDEL', LEASES, holder)
  local hold_s = math.max(0, now - acquired)
  local previous = tonumber(redis.call('HGET', STATS, 'ewma_hold_s') or '')
  local ewma = hold_s
  if previous then
    ewma = alpha * hold_s + (1 - alpha) * previous
  end
  redis.call('HSET', STATS, 'ewma_hold_s', num(ewma))
  -- The time between releases while someone waits is the rate the line really moves at (holds
  -- say how long a slot is busy, not how soon a busy worker gets to its next request).
  local last = tonumber(redis.call('HGET', STATS, 'last_release_at') or '')
  if last and redis.call('ZCARD', WAITERS) > 0 then
    local gap = math.min(math.max(0, now - last), tonumber(ARGV[7]))
    local previous_gap = tonumber(redis.call('HGET', STATS, 'ewma_gap_s') or '')
    if previous_gap then
      gap = alpha * gap + (1 - alpha) * previous_gap
    end
    redis.call('HSET', STATS, 'ewma_gap_s', num(gap))
  end
  redis.call('HSET', STATS, 'last_release_at', num(now))
  redis.call('HINCRBY', STATS, 'releases', 1)
  redis.call('PEXPIRE', STATS, tonumber(ARGV[6]))
  return {1, num(ewma)}

elseif op == 'renew' then
  -- ARGV: 3 holder, 4 token, 5 lease_s, 6 key ttl margin ms. A reclaimed lease cannot be renewed.
  -- The worker's lease keeper (worker/stores/lease_keeper.py) calls it while an attempt runs.
  local holder, token, lease_s = ARGV[3], ARGV[4], tonumber(ARGV[5])
  local _, held_token = lease_fields(holder)
  if held_token ~= token then
    return {0, ''}
  end
  redis.call('ZADD', HOLDERS, num(now + lease_s), holder)
  local lease_ms = math.ceil(lease_s * 1000) + tonumber(ARGV[6])
  extend_pttl(HOLDERS, lease_ms)
  extend_pttl(LEASES, lease_ms)
  return {1, num(now + lease_s)}

elseif op == 'abandon' then
  -- ARGV: 3 holder. A waiter that gives up leaves the line at once.
  local removed = redis.call('ZREM', WAITERS, ARGV[3])
  redis.call('ZREM', DEADLINES, ARGV[3])
  return removed
end
return redis.error_reply('ERR unknown slots operation')
