-- Record one outcome atomically: stream entry, latest-state hash, final marker, live message.
-- Loaded by worker/stores/outcome_writer.py, which substitutes the placeholders from worker/stores/keys.py.
--
-- KEYS: 1 outcome stream, 2 latest-state hash ('' = leave alone), 3 final marker of the request id,
--       4 rejection marker of this message ('' unless kind is 'rejection'),
--       5 invoke fence of the request id ('' = none), 6 request state hash,
--       7/8/9 metrics: outcomes, errors, latency (hashes without TTL: a handful of fields each),
--       10/11 the request watch: deadlines (zset), messages (hash),
--       12/13/14/15 following at the outcome's site: shares (hash), targets by status, stragglers by
--       DP, when each share is due (zset) ('' unless the outcome is a followed request's: distributing
--       or one of its finals)
-- ARGV: 1 json, 2 request_id, 3 package_id, 4 site_code, 5 status, 6 final ('1'/'0'),
--       7 requested_at, 8 attempt, 9 updated_at, 10 source_version ('' = unknown),
--       11 stream maxlen (approximate), 12 marker ttl (s), 13 channel, 14 kind: 'event' | 'final' | 'rejection',
--       15 metrics site label, 16 error kind ('' = none), 17 latency bucket field ('' = not a final),
--       18 latency seconds, 19 the request's share of the following counters (JSON
--       {"t": {status: targets}, "s": [straggler DP, ...]}; '' with a final: its share leaves),
--       20 when that share is due (epoch s: past its following deadline, with room), 21 now (epoch s)
--
-- A rejection is final for the message it answers, but it does not reserve the request id: the
-- producer may fix the request and send it again under the same id. So the final marker of a
-- rejection holds '$rejected_prefix<stream id>', which a later real final overwrites; and the
-- rejection itself is recorded once per message (KEYS[4]), not once per request id.
local kind = ARGV[14]
local is_final = ARGV[6] == '1'
local marker = redis.call('GET', KEYS[3])
local reserved = marker and string.sub(marker, 1, $rejected_prefix_len) ~= '$rejected_prefix'
if kind == 'rejection' then
  if redis.call('EXISTS', KEYS[4]) == 1 then
    return {0, '', 0}
  end
elseif reserved then
  -- The request already has its final outcome: not a second final (a redelivery), and not a
  -- late retrying event (a duplicate lineage after a lost ack).
  return {0, '', 0}
end
-- Read before the first write: a wrong-type key fails here, leaving nothing half-written.
local update_state = KEYS[2] ~= ''
if update_state then
  local cur = redis.call('HMGET', KEYS[2], '$f_request_id', '$f_requested_at', '$f_final', '$f_attempt')
  if cur[1] then
    if cur[1] == ARGV[2] then
      if (not is_final) and (cur[3] == '1' or (tonumber(cur[4]) or 0) > tonumber(ARGV[8])) then
        update_state = false
      end
    elseif cur[2] and cur[2] > ARGV[7] then
      update_state = false
    end
  end
end
-- The request's own latest event: the same rule for one request, and a rejection never covers a
-- request id whose real final is already recorded.
local update_request = not reserved
if update_request and not is_final then
  local rcur = redis.call('HMGET', KEYS[6], '$f_final', '$f_attempt')
  if rcur[1] == '1' or (tonumber(rcur[2]) or 0) > tonumber(ARGV[8]) then
    update_request = false
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[11], '*',
  '$s_outcome', ARGV[1], '$s_kind', 'request', '$s_request_id', ARGV[2], '$s_package_id', ARGV[3],
  '$s_site_code', ARGV[4], '$s_status', ARGV[5], '$s_final', ARGV[6])
if update_state then
  redis.call('HSET', KEYS[2], '$f_status', ARGV[5], '$f_request_id', ARGV[2], '$f_final', ARGV[6],
    '$f_updated_at', ARGV[9], '$f_source_version', ARGV[10], '$f_outcome', ARGV[1],
    '$f_requested_at', ARGV[7], '$f_attempt', ARGV[8])
end
if kind == 'rejection' then
  redis.call('SET', KEYS[4], id, 'EX', ARGV[12])
  if not reserved then
    redis.call('SET', KEYS[3], '$rejected_prefix' .. id, 'EX', ARGV[12])
  end
elseif is_final then
  redis.call('SET', KEYS[3], id, 'EX', ARGV[12])
  if KEYS[5] ~= '' then
    redis.call('DEL', KEYS[5])
  end
  -- The request ended: nothing more to watch for.
  redis.call('ZREM', KEYS[10], ARGV[2])
  redis.call('HDEL', KEYS[11], ARGV[2])
end
if update_request then
  redis.call('HSET', KEYS[6], '$f_status', ARGV[5], '$f_request_id', ARGV[2], '$f_final', ARGV[6],
    '$f_updated_at', ARGV[9], '$f_outcome', ARGV[1], '$f_requested_at', ARGV[7], '$f_attempt', ARGV[8],
    '$f_stream_id', id)
  redis.call('EXPIRE', KEYS[6], ARGV[12])
end
redis.call('HINCRBY', KEYS[7], ARGV[5] .. '|' .. ARGV[15], 1)
if ARGV[16] ~= '' then
  redis.call('HINCRBY', KEYS[8], ARGV[16] .. '|' .. (is_final and 'final' or 'retrying'), 1)
end
if ARGV[17] ~= '' then
  redis.call('HINCRBY', KEYS[9], ARGV[17], 1)
  redis.call('HINCRBY', KEYS[9], 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[9], 'sum', ARGV[18])
end
-- Following: the request's last share is taken back and this event's added (a redelivered event
-- adds what it takes back); a final only takes it back. A stale event (update_request false) changes nothing.
if KEYS[12] ~= '' then
  local function add_share(sign, raw)
    local share = cjson.decode(raw)
    for status, count in pairs(share.t) do
      -- Never 0 * -1: Lua writes it "-0", which HINCRBY refuses.
      if count ~= 0 and redis.call('HINCRBY', KEYS[13], status, sign * count) <= 0 then
        redis.call('HDEL', KEYS[13], status)
      end
    end
    for _, dp in ipairs(share.s) do
      if redis.call('HINCRBY', KEYS[14], dp, sign) <= 0 then
        redis.call('HDEL', KEYS[14], dp)
      end
    end
  end
  local function take_back(request_id)
    local last = redis.call('HGET', KEYS[12], request_id)
    if last then
      add_share(-1, last)
    end
    redis.call('HDEL', KEYS[12], request_id)
    redis.call('ZREM', KEYS[15], request_id)
  end
  -- A share long past its request's deadline belongs to a request that will publish nothing more
  -- (every followed request ends by its deadline): a few are dropped here, so none counts for ever.
  for _, overdue in ipairs(redis.call('ZRANGEBYSCORE', KEYS[15], '-inf', ARGV[21], 'LIMIT', 0, 10)) do
    if overdue ~= ARGV[2] then
      take_back(overdue)
    end
  end
  if update_request then
    take_back(ARGV[2])
    if not is_final then
      add_share(1, ARGV[19])
      redis.call('HSET', KEYS[12], ARGV[2], ARGV[19])
      redis.call('ZADD', KEYS[15], ARGV[20], ARGV[2])
    end
  end
end
redis.call('PUBLISH', ARGV[13], ARGV[1])
return {1, id, update_state and 1 or 0}
