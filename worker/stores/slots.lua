-- Per-provider concurrency cap: leases, and a waiting line ordered by (priority, arrival) whose
-- parked members are woken by the release that frees a slot (worker/stores/slots.py).
-- KEYS: 1 holders (zset holder -> lease expiry), 2 leases (hash holder -> "<acquired_at> <token>"),
--       3 waiters (zset holder -> priority * 1e13 + seq), 4 waiter deadlines (zset holder -> deadline,
--       polling waiters only), 5 stats (hash: seq, limit, ewma_hold_s, ewma_gap_s, last_release_at,
--       grants, releases, reclaimed, abandoned, parked, woken, rewoken),
--       6 parked (hash holder -> wake record JSON: the message that brings the request back),
--       7 prewoken (zset holder -> when its message was sent back ahead of its slot; -1: it came
--       back and parked again, not woken ahead again)
-- ARGV: 1 operation, 2 now ('' = Redis TIME), 3 lease_s (of a grant, a wake included),
--       4 key ttl margin ms, 5 stats/line ttl ms, then the operation's arguments (from 6, below).
--
-- A holder that is also in `parked` was woken and its message has not come back yet: its lease
-- runs from the wake. When that lease lapses unclaimed (the message was lost, or the worker
-- that took it died), the request is woken again with the same slot: nothing parked is lost.
local HOLDERS, LEASES, WAITERS, DEADLINES, STATS, PARKED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local PREWOKEN = KEYS[7]
local op = ARGV[1]
local now = clock(ARGV[2])
local lease_s = tonumber(ARGV[3])
local margin_ms = tonumber(ARGV[4])
local line_ms = tonumber(ARGV[5])
local lease_ms = math.ceil(lease_s * 1000) + margin_ms
local PRIORITY_WEIGHT = 1e13
-- A wake token nobody took (its waiter gave up) does not outlive this.
local SIGNAL_TTL_MS = 60000
-- Read as "Redis is full" by worker/stores/redis_full.py, like Redis's own refusal.
local REFUSED = 'OOM command not allowed: a provider slot could not be granted (Redis refused the write)'
-- Wake records of the publish kind, for the caller to send (the broker is not this Redis).
local to_publish = {}
-- Messages to push back onto their queues, in wake order (pushed when the script ends).
local to_push = {}

local function lease_fields(holder)
  local value = redis.call('HGET', LEASES, holder)
  if not value then
    return nil, nil
  end
  local space = string.find(value, ' ', 1, true)
  return tonumber(string.sub(value, 1, space - 1)), string.sub(value, space + 1)
end

-- A write Redis may refuse (at maxmemory under noeviction it refuses every command that could
-- grow memory, inside a script too, keeping what the script wrote before): false instead of an
-- error, so a release still frees its slot and a hand-off stops cleanly, for the next operation
-- or the sweep to finish once Redis has room.
local function try_write(...)
  local reply = redis.pcall(...)
  return not (type(reply) == 'table' and reply.err)
end

-- RPUSH puts each at the end consumers take from next: the last woken goes first, so the first
-- woken is taken first. A push for a grant from the line (its third field, the holder, still in
-- the line) settles that grant: pushed, the holder leaves the line; refused (Redis full, a push
-- refused after the grant's own writes went through), the grant is undone and the request keeps
-- its place, parked, for the next hand-off once Redis has room (ZREM and HDEL free memory, so a
-- full Redis allows them). Before, the slot stayed granted to a message that was never sent until
-- its lease lapsed (30 s). A re-wake's refused push (no holder here) lapses and is woken again.
local function flush_pushes()
  for i = #to_push, 1, -1 do
    local queue, message, holder = to_push[i][1], to_push[i][2], to_push[i][3]
    if try_write('RPUSH', queue, message) then
      if holder then
        redis.call('ZREM', WAITERS, holder)
      end
    elseif holder and redis.call('HEXISTS', PARKED, holder) == 1 then
      -- (A holder that claimed its slot in this same call, a copy of its message asking, keeps it.)
      redis.call('ZREM', HOLDERS, holder)
      redis.call('HDEL', LEASES, holder)
      try_write('HINCRBY', STATS, 'push_refused', 1)
    end
  end
  to_push = {}
end

-- The holder enters before it leaves the line: a refused write never drops it from both. With
-- `stay_in_line` it leaves the line only once its wake's push went out (flush_pushes).
local function grant(holder, token, stay_in_line)
  if not try_write('ZADD', HOLDERS, num(now + lease_s), holder) then
    return false
  end
  if not try_write('HSET', LEASES, holder, num(now) .. ' ' .. token) then
    redis.call('ZREM', HOLDERS, holder)
    return false
  end
  if not stay_in_line then
    redis.call('ZREM', WAITERS, holder)
  end
  redis.call('ZREM', DEADLINES, holder)
  try_write('HINCRBY', STATS, 'grants', 1)
  extend_pttl(HOLDERS, lease_ms)
  extend_pttl(LEASES, lease_ms)
  return true
end

-- Send a parked request's message back to its queue: pushed here (its queue is in this Redis) at
-- the end kombu takes from next, or handed to the caller to publish. `again`: a re-wake, whose
-- message gets a new delivery tag (the first copy may still exist somewhere).
local function deliver(holder, record, again, from_line)
  local ok, wake = pcall(cjson.decode, record)
  if not ok or type(wake) ~= 'table' then
    redis.call('HDEL', PARKED, holder)
    if from_line then
      redis.call('ZREM', WAITERS, holder)
    end
    return
  end
  if type(wake.queue) == 'string' and type(wake.message) == 'string' then
    local message = wake.message
    if again then
      local decoded_ok, decoded = pcall(cjson.decode, message)
      if decoded_ok and type(decoded) == 'table' and type(decoded.properties) == 'table' then
        decoded.properties.delivery_tag = tostring(decoded.properties.delivery_tag) .. '.' .. num(now)
        message = cjson.encode(decoded)
      end
    end
    table.insert(to_push, {wake.queue, message, from_line and holder or nil})
    return
  elseif type(wake.signal) == 'string' then
    -- A waiter blocked in a thread (BLPOP on this key): its lease ("<token> <acquired> <expires>")
    -- tells it the slot is its own, with no claim to make.
    local acquired, token = lease_fields(holder)
    local granted = '1'
    if token then
      granted = token .. ' ' .. num(acquired) .. ' ' .. num(now + lease_s)
    end
    try_write('RPUSH', wake.signal, granted)
    redis.call('PEXPIRE', wake.signal, SIGNAL_TTL_MS)
  elseif type(wake.publish) == 'string' then
    table.insert(to_publish, wake.publish)
  else
    redis.call('HDEL', PARKED, holder)
  end
end

local function is_signal(record)
  return string.find(record, '"signal"', 1, true) ~= nil
end

-- A record this script pushes itself (worker/stores/slots.py `push_wake`).
local function is_push(record)
  return string.sub(record, 1, 9) == '{"queue":'
end

-- A waiter woken ahead: its message went back before a slot was free, so that its delivery does
-- what comes before the slot (a broker hop, the watch, the coalescing claim) while the slots are
-- still busy, and then waits in its thread for the hand-off (`await_woken_slot`): a freed slot
-- goes to work at once instead of idling through that delivery. At most half the limit (rounded
-- up) are woken ahead at a time: each may hold a worker thread while it waits.
local function wake_ahead(limit, granted_in_line)
  local ahead = math.ceil(limit / 2)
  local woken = redis.call('ZCOUNT', PREWOKEN, 0, '+inf')
  if woken >= ahead then
    return
  end
  -- The first `granted_in_line` of the line hold a slot already (their push is to go): past them.
  for _, holder in ipairs(redis.call('ZRANGE', WAITERS, 0, ahead - 1 + (granted_in_line or 0))) do
    if woken >= ahead then
      break
    end
    if not redis.call('ZSCORE', PREWOKEN, holder) and not redis.call('ZSCORE', HOLDERS, holder) then
      local record = redis.call('HGET', PARKED, holder)
      if record and not is_signal(record) and try_write('ZADD', PREWOKEN, num(now), holder) then
        try_write('HINCRBY', STATS, 'woken_ahead', 1)
        deliver(holder, record, false)
        woken = woken + 1
      end
    end
  end
end

local function wake_token(holder)
  return 'wake-' .. num(now) .. '-' .. redis.sha1hex(holder)
end

-- Dead holders (their lease ran out) leave, or, if woken and never claimed, are woken again;
-- polling waiters that stopped polling drop out of the line.
local function reclaim()
  local expired = redis.call('ZRANGEBYSCORE', HOLDERS, '-inf', num(now))
  for _, holder in ipairs(expired) do
    redis.call('ZREM', PREWOKEN, holder)
    local record = redis.call('HGET', PARKED, holder)
    if record and is_signal(record) then
      -- A blocked waiter that never claimed its slot gave up or died with its thread: it goes.
      redis.call('HDEL', PARKED, holder)
      record = nil
    end
    if record then
      if grant(holder, wake_token(holder)) then
        try_write('HINCRBY', STATS, 'rewoken', 1)
        deliver(holder, record, true)
      end
    else
      redis.call('ZREM', HOLDERS, holder)
      redis.call('HDEL', LEASES, holder)
      try_write('HINCRBY', STATS, 'reclaimed', 1)
    end
  end
  local gone = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', num(now))
  for _, member in ipairs(gone) do
    redis.call('ZREM', DEADLINES, member)
    redis.call('ZREM', WAITERS, member)
  end
  if #gone > 0 then
    try_write('HINCRBY', STATS, 'abandoned', #gone)
  end
end

-- Every free slot goes to the head of the line: a parked head is granted and woken now; a polling
-- head (a verifying request's follow-up Get, which holds its thread) keeps the slot for its next look.
local function hand_off()
  local limit = tonumber(redis.call('HGET', STATS, 'limit') or '0')
  local in_use = redis.call('ZCARD', HOLDERS)
  -- Heads granted here whose push is still to go stay first in the line until flush_pushes.
  local pending = 0
  while in_use < limit do
    local head = redis.call('ZRANGE', WAITERS, pending, pending)
    if #head == 0 then
      break
    end
    local holder = head[1]
    local record = redis.call('HGET', PARKED, holder)
    if not record then
      break
    end
    local ahead = tonumber(redis.call('ZSCORE', PREWOKEN, holder) or '-1')
    -- Woken ahead, its message is already on its way: its delivery claims the slot. Waiting in
    -- its thread: the signal tells it now. Otherwise its message is sent now.
    local sends = ahead < 0 or is_signal(record)
    local stays = sends and is_push(record)
    if not grant(holder, wake_token(holder), stays) then
      break
    end
    try_write('HINCRBY', STATS, 'woken', 1)
    redis.call('ZREM', PREWOKEN, holder)
    if sends then
      deliver(holder, record, false, stays)
    end
    if stays then
      pending = pending + 1
    end
    in_use = in_use + 1
  end
  wake_ahead(limit, pending)
end

local function keep_line()
  extend_pttl(WAITERS, line_ms)
  extend_pttl(DEADLINES, line_ms)
  extend_pttl(PARKED, line_ms)
  extend_pttl(PREWOKEN, line_ms)
  redis.call('PEXPIRE', STATS, line_ms)
end

local function set_limit(limit)
  try_write('HSET', STATS, 'limit', int(limit))
end

local function join_line(holder, priority)
  if not redis.call('ZSCORE', WAITERS, holder) then
    -- A waiter keeps its place (and first priority) for as long as it is in line.
    local seq = redis.call('HINCRBY', STATS, 'seq', 1)
    redis.call('ZADD', WAITERS, string.format('%.0f', priority * PRIORITY_WEIGHT + seq), holder)
  end
end

local function wait_reply(holder)
  local rank = redis.call('ZRANK', WAITERS, holder)
  if not rank then
    rank = redis.call('ZCARD', WAITERS)
  end
  local ewma = redis.call('HGET', STATS, 'ewma_hold_s') or ''
  local gap = redis.call('HGET', STATS, 'ewma_gap_s') or ''
  return {'wait', rank, redis.call('ZCARD', HOLDERS), redis.call('ZCARD', WAITERS), ewma, gap}
end

local reply
if op == 'acquire' then
  -- ARGV: 6 holder, 7 limit, 8 priority, 9 waiter_ttl_s, 10 new token, 11 join (1: wait in line
  -- polling; 0: do not join, the caller parks if it must wait).
  local holder, limit, priority = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
  local waiter_ttl_s, token, join = tonumber(ARGV[9]), ARGV[10], ARGV[11] == '1'
  set_limit(limit)
  reclaim()
  hand_off()
  if redis.call('ZSCORE', HOLDERS, holder) then
    -- Asking again while holding renews the same lease: a redelivered message, or the message a
    -- release woke (which claims its slot here: nothing to wake again).
    redis.call('ZADD', HOLDERS, num(now + lease_s), holder)
    redis.call('ZREM', WAITERS, holder)
    redis.call('ZREM', DEADLINES, holder)
    redis.call('HDEL', PARKED, holder)
    redis.call('ZREM', PREWOKEN, holder)
    local acquired, held = lease_fields(holder)
    if not held then
      -- Unreachable while both keys share their TTLs; repaired rather than trusted.
      acquired, held = now, token
      redis.call('HSET', LEASES, holder, num(now) .. ' ' .. held)
    end
    extend_pttl(HOLDERS, lease_ms)
    extend_pttl(LEASES, lease_ms)
    keep_line()
    reply = {'granted', held, num(acquired), num(now + lease_s)}
  else
    local in_use = redis.call('ZCARD', HOLDERS)
    if join then
      join_line(holder, priority)
      redis.call('ZADD', DEADLINES, num(now + waiter_ttl_s), holder)
      extend_pttl(WAITERS, math.ceil(waiter_ttl_s * 1000) + margin_ms)
      extend_pttl(DEADLINES, math.ceil(waiter_ttl_s * 1000) + margin_ms)
      local rank = redis.call('ZRANK', WAITERS, holder)
      if rank < limit - in_use then
        if not grant(holder, token) then
          flush_pushes()
          return redis.error_reply(REFUSED)
        end
        keep_line()
        reply = {'granted', token, num(now), num(now + lease_s)}
      end
    elseif in_use < limit and redis.call('ZCARD', WAITERS) == 0 then
      -- Nobody in line (a free slot with a line was just handed off above): a newcomer takes it.
      if not grant(holder, token) then
        flush_pushes()
        return redis.error_reply(REFUSED)
      end
      keep_line()
      reply = {'granted', token, num(now), num(now + lease_s)}
    end
    if reply == nil then
      keep_line()
      reply = wait_reply(holder)
    end
  end

elseif op == 'park' then
  -- ARGV: 6 holder, 7 limit, 8 priority, 9 wake record (JSON), 10 its signal key or ''. The
  -- request's message is acked by
  -- the caller once this returns: from here the record is the request. A holder parking again
  -- (a second copy of its message) keeps its place, or its slot, with the newer record.
  local holder, limit, priority = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
  set_limit(limit)
  reclaim()
  -- Already granted as it parks its message (not a thread's wait): the grant sent nothing this
  -- message could claim. A waiter woken ahead whose delivery found no slot and parks again, the
  -- slot handed over in between (the grant pushed nothing: that delivery was to claim it), or one
  -- that waited in its thread and stopped listening just before the hand-off told it. Its message
  -- goes now; before, the slot idled granted until its lease lapsed and a sweep woke it again.
  local granted_before = ARGV[10] == '' and redis.call('ZSCORE', HOLDERS, holder)
  if ARGV[10] ~= '' then
    -- A blocking waiter's key: no token left from an earlier wait may wake it.
    redis.call('DEL', ARGV[10])
  elseif redis.call('ZSCORE', PREWOKEN, holder) then
    -- Woken ahead, it waited in vain: woken with its slot from now on, not ahead again.
    redis.call('ZADD', PREWOKEN, -1, holder)
  end
  redis.call('HSET', PARKED, holder, ARGV[9])
  redis.call('HINCRBY', STATS, 'parked', 1)
  if not redis.call('ZSCORE', HOLDERS, holder) then
    join_line(holder, priority)
    redis.call('ZREM', DEADLINES, holder)
  end
  hand_off()
  keep_line()
  if redis.call('ZSCORE', HOLDERS, holder) then
    if granted_before then
      deliver(holder, ARGV[9], false)  -- granted before this park (a grant by the hand-off above sent it)
    end
    reply = {'woken', 0, redis.call('ZCARD', HOLDERS), redis.call('ZCARD', WAITERS)}
  else
    reply = {'parked', redis.call('ZRANK', WAITERS, holder), redis.call('ZCARD', HOLDERS), redis.call('ZCARD', WAITERS)}
  end

elseif op == 'park_many' then
  -- ARGV: 6 limit, 7 priority, then pairs: holder, wake record. Requests parked by their producer
  -- (the API, when the broker is this Redis) before any worker saw them: a burst waits here, not
  -- in the queue, and each is delivered once, when woken. Free slots go to the first at once.
  local limit, priority = tonumber(ARGV[6]), tonumber(ARGV[7])
  set_limit(limit)
  reclaim()
  local count = 0
  for i = 8, #ARGV, 2 do
    local holder = ARGV[i]
    redis.call('HSET', PARKED, holder, ARGV[i + 1])
    if not redis.call('ZSCORE', HOLDERS, holder) then
      join_line(holder, priority)
      redis.call('ZREM', DEADLINES, holder)
    end
    count = count + 1
  end
  try_write('HINCRBY', STATS, 'parked', count)
  hand_off()
  keep_line()
  reply = {count, redis.call('ZCARD', HOLDERS), redis.call('ZCARD', WAITERS)}

elseif op == 'release' then
  -- ARGV: 6 holder, 7 token, 8 ewma alpha, 9 longest gap sample (s). Idempotent: a second
  -- release finds no lease. The slot goes straight to the head of the line.
  local holder, token, alpha = ARGV[6], ARGV[7], tonumber(ARGV[8])
  local acquired, held_token = lease_fields(holder)
  if held_token ~= token then
    reply = {0}
  else
    redis.call('ZREM', HOLDERS, holder)
    redis.call('HDEL', LEASES, holder)
    redis.call('HDEL', PARKED, holder)
    local hold_s = math.max(0, now - acquired)
    local previous = tonumber(redis.call('HGET', STATS, 'ewma_hold_s') or '')
    local ewma = hold_s
    if previous then
      ewma = alpha * hold_s + (1 - alpha) * previous
    end
    try_write('HSET', STATS, 'ewma_hold_s', num(ewma))
    -- The time between releases while someone waits is the rate the line really moves at.
    local last = tonumber(redis.call('HGET', STATS, 'last_release_at') or '')
    if last and redis.call('ZCARD', WAITERS) > 0 then
      local gap = math.min(math.max(0, now - last), tonumber(ARGV[9]))
      local previous_gap = tonumber(redis.call('HGET', STATS, 'ewma_gap_s') or '')
      if previous_gap then
        gap = alpha * gap + (1 - alpha) * previous_gap
      end
      try_write('HSET', STATS, 'ewma_gap_s', num(gap))
    end
    try_write('HSET', STATS, 'last_release_at', num(now))
    try_write('HINCRBY', STATS, 'releases', 1)
    reclaim()
    hand_off()
    redis.call('PEXPIRE', STATS, line_ms)
    reply = {1}
  end

elseif op == 'leave' then
  -- ARGV: 6 holder. Whatever this request holds or waits for here goes, whatever its token:
  -- a woken request that ended before it needed its slot (its bulk was cancelled, it had ended).
  local holder = ARGV[6]
  local left = redis.call('ZREM', HOLDERS, holder) + redis.call('ZREM', WAITERS, holder)
  redis.call('HDEL', LEASES, holder)
  redis.call('HDEL', PARKED, holder)
  redis.call('ZREM', DEADLINES, holder)
  redis.call('ZREM', PREWOKEN, holder)
  reclaim()
  hand_off()
  reply = {left}

elseif op == 'renew' then
  -- ARGV: 6 holder, 7 token. A reclaimed lease cannot be renewed.
  -- The worker's lease keeper (worker/stores/lease_keeper.py) calls it while an attempt runs.
  local holder, token = ARGV[6], ARGV[7]
  local _, held_token = lease_fields(holder)
  if held_token ~= token then
    reply = {0, ''}
  else
    redis.call('ZADD', HOLDERS, num(now + lease_s), holder)
    extend_pttl(HOLDERS, lease_ms)
    extend_pttl(LEASES, lease_ms)
    reply = {1, num(now + lease_s)}
  end

elseif op == 'abandon' then
  -- ARGV: 6 holder. A polling waiter that gives up leaves the line at once (and lets it move).
  local removed = redis.call('ZREM', WAITERS, ARGV[6])
  redis.call('ZREM', DEADLINES, ARGV[6])
  redis.call('HDEL', PARKED, ARGV[6])
  redis.call('ZREM', PREWOKEN, ARGV[6])
  hand_off()
  reply = {removed}

elseif op == 'sweep' then
  -- ARGV: 6 limit. What a release would have done, for slots freed by lapsed leases and for woken
  -- requests whose message never came back (run by every worker on a timer).
  set_limit(tonumber(ARGV[6]))
  reclaim()
  hand_off()
  reply = {redis.call('ZCARD', HOLDERS), redis.call('ZCARD', WAITERS), redis.call('HLEN', PARKED)}
else
  return redis.error_reply('ERR unknown slots operation')
end
flush_pushes()
return {to_publish, unpack(reply)}
