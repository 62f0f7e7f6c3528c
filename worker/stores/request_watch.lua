-- The watch over live requests (worker/stores/request_watch.py).
-- KEYS: 1 deadlines (zset request id -> epoch by which a delivery must have been seen),
--       2 messages (hash request id -> "<task id> <kwargs JSON>")
-- ARGV: 1 operation, 2 now ('' = Redis TIME), then the operation's arguments.
local DEADLINES, MESSAGES = KEYS[1], KEYS[2]
local op = ARGV[1]
local now = clock(ARGV[2])

if op == 'expect' then
  -- ARGV: 3 request id, 4 seconds from now, 5 "<task id> <kwargs JSON>"
  redis.call('ZADD', DEADLINES, num(now + tonumber(ARGV[4])), ARGV[3])
  redis.call('HSET', MESSAGES, ARGV[3], ARGV[5])
  return 1
elseif op == 'overdue' then
  -- ARGV: 3 max count, 4 seconds until the next deadline of each returned request.
  -- Each returned request gets a new deadline at once, so two sweepers never both re-send it.
  local ids = redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', num(now), 'LIMIT', 0, tonumber(ARGV[3]))
  local out = {}
  for _, id in ipairs(ids) do
    local message = redis.call('HGET', MESSAGES, id)
    if message then
      redis.call('ZADD', DEADLINES, num(now + tonumber(ARGV[4])), id)
      table.insert(out, id)
      table.insert(out, message)
    else
      redis.call('ZREM', DEADLINES, id)
    end
  end
  return out
elseif op == 'forget' then
  -- ARGV: 3 request id. A delivery found the request already ended.
  redis.call('ZREM', DEADLINES, ARGV[3])
  redis.call('HDEL', MESSAGES, ARGV[3])
  return 1
end
return redis.error_reply('ERR unknown request watch operation')
