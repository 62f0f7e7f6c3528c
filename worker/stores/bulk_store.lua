-- A bulk job: its record, the pending children, the taken (outstanding) ones, exact counts.
-- KEYS: 1 record (hash), 2 pending (list "<child id> <spec JSON>"), 3 taken (hash child id -> spec JSON),
--       4 heartbeats (zset child id -> last sign of life), 5 children (set: ids appended, while enumerating),
--       6 undelivered (zset child id -> when taken, until its first delivery checks in),
--       7 following (hash child id -> its straggler marks: accepted, followed to every DP, out of the window),
--       8 dp stragglers (hash mark field -> packages), 9 dp rank (zset dp -> packages it holds back),
--       10 the jobs-by-state gauge for /metrics (hash state -> jobs; no TTL: one field per state)
-- ARGV: 1 operation, 2 now ('' = Redis TIME), 3 key ttl (s), then the operation's arguments (below).
local RECORD, PENDING, TAKEN, HEARTBEATS, CHILDREN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local UNDELIVERED, FOLLOWING, STRAGGLERS, RANK, BY_STATE = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local op = ARGV[1]
local now = clock(ARGV[2])
local ttl_s = tonumber(ARGV[3])

-- Every key of a bulk expires ttl_s after the bulk's last write (missing keys are skipped).
local function keep()
  for i = 1, 9 do
    redis.call('EXPIRE', KEYS[i], ttl_s)
  end
end

-- Every state change goes through here, so the jobs-by-state gauge stays exact.
local function set_state(new)
  local old = redis.call('HGET', RECORD, 'state')
  if old == new then
    return
  end
  if old then
    redis.call('HINCRBY', BY_STATE, old, -1)
  end
  redis.call('HINCRBY', BY_STATE, new, 1)
  redis.call('HSET', RECORD, 'state', new)
end

local function snapshot()
  return {redis.call('HGETALL', RECORD), redis.call('LLEN', PENDING), redis.call('HLEN', TAKEN),
    redis.call('HLEN', FOLLOWING)}
end

local function state()
  return redis.call('HGET', RECORD, 'state')
end

local function split(item)
  local space = string.find(item, ' ', 1, true)
  return string.sub(item, 1, space - 1), string.sub(item, space + 1)
end

-- No more appends: the total is what was appended, and the dedupe set has done its job.
local function close_enumeration()
  if redis.call('HGET', RECORD, 'enumeration_done') ~= '1' then
    redis.call('HSET', RECORD, 'enumeration_done', '1', 'total', redis.call('SCARD', CHILDREN))
    redis.call('DEL', CHILDREN)
  end
end

-- The bulk is over when enumeration is closed and no child is pending or outstanding. Only the
-- call that sets finished_at returns 1: exactly one caller publishes the bulk's final outcome.
local function maybe_finish()
  if redis.call('HEXISTS', RECORD, 'finished_at') == 1 then
    return 0
  end
  if redis.call('HGET', RECORD, 'enumeration_done') ~= '1' then
    return 0
  end
  if redis.call('LLEN', PENDING) > 0 or redis.call('HLEN', TAKEN) > 0 or redis.call('HLEN', FOLLOWING) > 0 then
    return 0
  end
  if state() == 'running' then
    set_state('done')
  end
  redis.call('HSET', RECORD, 'finished_at', num(now))
  return 1
end

-- Move up to n pending children to taken (outstanding), stamped with a heartbeat.
local function move_pending(n)
  if n <= 0 then
    return {}
  end
  local items = redis.call('LRANGE', PENDING, 0, n - 1)
  if #items == 0 then
    return items
  end
  redis.call('LTRIM', PENDING, #items, -1)
  for _, item in ipairs(items) do
    local id, spec = split(item)
    redis.call('HSET', TAKEN, id, spec)
    redis.call('ZADD', HEARTBEATS, num(now), id)
    redis.call('ZADD', UNDELIVERED, num(now), id)
  end
  return items
end

-- A child's straggler marks (worker/domain/stragglers.py) replace the ones it reported before:
-- the rollup is the sum of every child's latest marks. `flat` is "field n field n ..." (fields hold
-- no space); a mark "<status>|<dp>" also moves the DP's rank, "~source" and "~unlisted" do not.
local function add_marks(flat, sign)
  if not flat or flat == '' then
    return
  end
  local field = nil
  for token in string.gmatch(flat, '%S+') do
    if field == nil then
      field = token
    else
      local n = sign * tonumber(token)
      if redis.call('HINCRBY', STRAGGLERS, field, n) <= 0 then
        redis.call('HDEL', STRAGGLERS, field)
      end
      local bar = string.find(field, '|', 1, true)
      if bar then
        local dp = string.sub(field, bar + 1)
        if tonumber(redis.call('ZINCRBY', RANK, n, dp)) <= 0 then
          redis.call('ZREM', RANK, dp)
        end
      end
      field = nil
    end
  end
end

local function replace_marks(child, new_flat)
  add_marks(redis.call('HGET', FOLLOWING, child), -1)
  add_marks(new_flat, 1)
end

local function joined(first)
  return table.concat(ARGV, ' ', first, math.max(#ARGV, first - 1))
end

-- The window refill of `take`, for a call that just freed a place in it.
local function refill(window, max_count)
  local current = state()
  if window <= 0 or (current ~= 'enumerating' and current ~= 'running') then
    return {}
  end
  local items = move_pending(math.min(window - redis.call('HLEN', TAKEN), max_count))
  if #items > 0 then
    redis.call('HINCRBY', RECORD, 'enqueued', #items)
  end
  return items
end

if op == 'create' then
  -- ARGV: 4 bulk id, 5 site code, 6 criteria JSON. Idempotent: an existing record is returned as is.
  if redis.call('EXISTS', RECORD) == 1 then
    return {0, 0, snapshot()}
  end
  redis.call('HSET', RECORD, 'bulk_id', ARGV[4], 'site_code', ARGV[5], 'criteria', ARGV[6],
    'enumeration_done', '0', 'enqueued', 0, 'started_at', num(now))
  set_state('enumerating')
  keep()
  return {1, 0, snapshot()}
end

if redis.call('EXISTS', RECORD) == 0 then
  return redis.error_reply('NOBULK no such bulk job')
end

if op == 'append' then
  -- ARGV: 4.. items "<child id> <spec JSON>". Children already appended (a redelivered page) are skipped.
  local current = state()
  if current ~= 'enumerating' then
    return {0, current}
  end
  local added = 0
  for i = 4, #ARGV do
    local id = split(ARGV[i])
    if redis.call('SADD', CHILDREN, id) == 1 then
      redis.call('RPUSH', PENDING, ARGV[i])
      added = added + 1
    end
  end
  keep()
  return {added, current}

elseif op == 'enumeration_done' then
  local current = state()
  if current == 'enumerating' then
    set_state('running')
  end
  close_enumeration()
  local last = maybe_finish()
  keep()
  return {current == 'enumerating' and 1 or 0, last, snapshot()}

elseif op == 'take' then
  -- ARGV: 4 max outstanding, 5 max count. Nothing once the bulk is cancelled, failed or done.
  local current = state()
  if current ~= 'enumerating' and current ~= 'running' then
    return {}
  end
  local room = math.min(tonumber(ARGV[4]) - redis.call('HLEN', TAKEN), tonumber(ARGV[5]))
  local items = move_pending(room)
  if #items > 0 then
    redis.call('HINCRBY', RECORD, 'enqueued', #items)
    keep()
  end
  return items

elseif op == 'drain' then
  -- ARGV: 4 max count. A cancelled or failed bulk's pending children, moved to taken so each is
  -- counted by child_finished like any other (and found by `stalled` if the drainer dies).
  local current = state()
  if current ~= 'cancelled' and current ~= 'failed' then
    return {}
  end
  local items = move_pending(tonumber(ARGV[4]))
  keep()
  return items

elseif op == 'finished' then
  -- ARGV: 4 child id, 5 status, 6 max outstanding (0: take nothing), 7 max count, 8.. the final's
  -- straggler marks (field, n pairs). Counted once: only the call that removes it from taken (or
  -- following) counts it. That call also refills the window (the `take` below, in the same script:
  -- one round trip per ending child instead of two).
  local child = ARGV[4]
  if redis.call('HDEL', TAKEN, child) == 0 and redis.call('HEXISTS', FOLLOWING, child) == 0 then
    return {0, 0, snapshot(), {}}
  end
  replace_marks(child, joined(8))
  redis.call('HDEL', FOLLOWING, child)
  redis.call('ZREM', HEARTBEATS, child)
  redis.call('ZREM', UNDELIVERED, child)
  redis.call('HINCRBY', RECORD, 'count:' .. ARGV[5], 1)
  local last = maybe_finish()
  local items = {}
  if last == 0 then
    items = refill(tonumber(ARGV[6] or '0'), tonumber(ARGV[7]))
  end
  keep()
  return {1, last, snapshot(), items}

elseif op == 'following' then
  -- ARGV: 4 child id, 5 max outstanding (0: take nothing), 6 max count, 7.. straggler marks.
  -- A child accepted and followed to every DP (a `distributing` event): it leaves the window at
  -- once (following can take a day; the window paces the provider's calls, not DP copies) and
  -- its marks replace its last. A child neither outstanding nor following (it ended) is ignored.
  local child = ARGV[4]
  local items = {}
  if redis.call('HDEL', TAKEN, child) == 1 then
    redis.call('ZREM', HEARTBEATS, child)
    redis.call('ZREM', UNDELIVERED, child)
    redis.call('HSET', FOLLOWING, child, '')
    items = refill(tonumber(ARGV[5]), tonumber(ARGV[6]))
  elseif redis.call('HEXISTS', FOLLOWING, child) == 0 then
    return {0, 0, snapshot(), {}}
  end
  local marks = joined(7)
  replace_marks(child, marks)
  redis.call('HSET', FOLLOWING, child, marks)
  keep()
  return {1, 0, snapshot(), items}

elseif op == 'stop' then
  -- ARGV: 4 new state ('cancelled' or 'failed'), 5 error text. Only a live bulk stops.
  local current = state()
  local applied = 0
  if current == 'enumerating' or current == 'running' then
    set_state(ARGV[4])
    if ARGV[4] == 'failed' then
      redis.call('HSET', RECORD, 'error', ARGV[5])
    end
    close_enumeration()
    applied = 1
  end
  local last = maybe_finish()
  keep()
  return {applied, last, snapshot()}

elseif op == 'dry_run_done' then
  -- ARGV: 4 matching packages, 5 the first of them (JSON). A dry run refreshes nothing: it ends
  -- done at once, with the count as its total and nothing pending.
  if state() ~= 'enumerating' then
    return {0, 0, snapshot()}
  end
  redis.call('HSET', RECORD, 'dry_run', '1', 'enumeration_done', '1', 'total', ARGV[4], 'sample', ARGV[5],
    'finished_at', num(now))
  redis.call('DEL', CHILDREN)
  set_state('done')
  keep()
  return {1, 1, snapshot()}

elseif op == 'heartbeat' then
  -- ARGV: 4 child id. Only an outstanding child has a heartbeat to refresh. Answers with the
  -- bulk's state too, so a child about to start learns of a cancel in the same round trip.
  if not redis.call('ZSCORE', HEARTBEATS, ARGV[4]) then
    -- A followed child polls its DPs with no heartbeat: out of the window, still the bulk's.
    return {redis.call('HEXISTS', FOLLOWING, ARGV[4]), state()}
  end
  redis.call('ZADD', HEARTBEATS, num(now), ARGV[4])
  redis.call('ZREM', UNDELIVERED, ARGV[4])
  keep()
  return {1, state()}

elseif op == 'stalled' then
  -- ARGV: 4 idle seconds, 5 max count, 6 undelivered seconds. Outstanding children silent for idle
  -- seconds, and children taken that long ago whose first delivery never checked in (their
  -- message was never published: the dispatcher died in between); each is stamped now so two
  -- sweepers do not both re-enqueue it.
  local ids = redis.call('ZRANGEBYSCORE', HEARTBEATS, '-inf', num(now - tonumber(ARGV[4])),
    'LIMIT', 0, tonumber(ARGV[5]))
  if ARGV[6] then
    local seen = {}
    for _, id in ipairs(ids) do
      seen[id] = true
    end
    local undelivered = redis.call('ZRANGEBYSCORE', UNDELIVERED, '-inf', num(now - tonumber(ARGV[6])),
      'LIMIT', 0, tonumber(ARGV[5]))
    for _, id in ipairs(undelivered) do
      if not seen[id] and #ids < tonumber(ARGV[5]) then
        table.insert(ids, id)
      end
    end
  end
  local out = {}
  for _, id in ipairs(ids) do
    local spec = redis.call('HGET', TAKEN, id)
    if spec then
      redis.call('ZADD', HEARTBEATS, num(now), id)
      if redis.call('ZSCORE', UNDELIVERED, id) then
        redis.call('ZADD', UNDELIVERED, num(now), id)
      end
      table.insert(out, id .. ' ' .. spec)
    else
      redis.call('ZREM', HEARTBEATS, id)
      redis.call('ZREM', UNDELIVERED, id)
    end
  end
  keep()
  return out
end
return redis.error_reply('ERR unknown bulk operation')
