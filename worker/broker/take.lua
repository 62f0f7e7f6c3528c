-- Take one message for a consumer without a moment where it lives only in the consumer's memory
-- (worker/broker/transport.py). One call does four things, atomically:
--   1. the consumer says it is alive and names the list its blocking wait moves messages into;
--   2. at most every ARGV[2] seconds (whoever calls first), the in-flight lists of consumers that
--      are no longer alive go back to the queues they came from;
--   3. in the same pass, it names the holders no longer alive whose holdings (messages kombu
--      records as unacked: running, prefetched, or waiting for their countdown) are still listed:
--      the caller puts those back through kombu's own restore (it knows the exchange bindings);
--   4. the first message found in KEYS[6..] (kombu's order: priority, then queue cycle) moves to
--      this consumer's in-flight list for that queue, and is returned with its queue key.
--
-- KEYS[1] this consumer's in-flight base (no '|'); KEYS[2] registry hash: in-flight list -> queue key;
-- KEYS[3] recovery gate (string, TTL); KEYS[4] kombu's unacked hash; KEYS[5] the set of holders
-- (ids whose '<id>:held' set lists delivery tags); KEYS[6..] the queue keys.
-- ARGV[1] alive TTL (s); ARGV[2] recovery interval (s); ARGV[3] the key the blocking wait watches;
-- ARGV[4] this consumer's holder id; ARGV[5] seconds to hold the general recovery off (0: none):
-- the caller has just seen Redis refuse writes, which no consumer could renew its alive key
-- through, so a live one may look dead until its next beat; ARGV[6..] in-flight bases and holder
-- ids of this process that have closed or been retired (dead now, whatever their alive key says):
-- naming any makes this call restore them at once, whatever the gate.
-- Returns {queue key or '', message or '', messages restored, dead holder ids...}.
--
-- A dead consumer's list stays registered for REGISTERED_AFTER_DEATH_S after it was last found
-- with something in it (the time is kept in '<registry>:dead'): a blocking move the consumer sent
-- before it was taken for dead (a frozen process, a connection Redis has not seen close yet) can
-- still land in it, and the next passes put that back too. A consumer found alive again is
-- forgotten there.

local REGISTERED_AFTER_DEATH_S = 60

local base, registry = KEYS[1], KEYS[2]
local dead_since = registry .. ':dead'
redis.call('SET', base .. ':alive', '1', 'EX', ARGV[1])
redis.call('SET', ARGV[4] .. ':alive', '1', 'EX', ARGV[1])
redis.call('HSET', registry, base .. '|' .. ARGV[3], ARGV[3])

local retired = {}
local any_retired = false
for i = 6, #ARGV do
    retired[ARGV[i]] = true
    any_retired = true
    redis.call('DEL', ARGV[i] .. ':alive')
end

local scan_all = false
local postpone = tonumber(ARGV[5]) or 0
if postpone > 0 then
    redis.call('SET', KEYS[3], '1', 'EX', postpone)
elseif redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then
    scan_all = true
end

-- A retired id is dead; in a general pass, so is any id whose alive key has lapsed.
local function is_dead(id)
    if id == nil or retired[id] then
        return true
    end
    return scan_all and redis.call('EXISTS', id .. ':alive') == 0
end

local restored = 0
local dead_holders = {}
if scan_all or any_retired then
    local now = tonumber(redis.call('TIME')[1])
    local entries = redis.call('HGETALL', registry)
    for i = 1, #entries, 2 do
        local list, source = entries[i], entries[i + 1]
        local owner = string.match(list, '^(.-)|')
        if is_dead(owner) then
            local found = false
            while true do
                local item = redis.call('RPOP', list)
                if not item then break end
                found = true
                -- A message kombu already holds as unacked comes back through kombu's own restore:
                -- putting it back here too would deliver it twice.
                local ok, message = pcall(cjson.decode, item)
                local tag = nil
                if ok and type(message) == 'table' and type(message.properties) == 'table' then
                    tag = message.properties.delivery_tag
                end
                if not (type(tag) == 'string' and redis.call('HEXISTS', KEYS[4], tag) == 1) then
                    -- RPUSH: it was taken from the right (the oldest end), so it is next again.
                    redis.call('RPUSH', source, item)
                    restored = restored + 1
                end
            end
            local since = tonumber(redis.call('HGET', dead_since, list))
            if found or since == nil then
                redis.call('HSET', dead_since, list, now)
            elseif now - since >= REGISTERED_AFTER_DEATH_S then
                redis.call('HDEL', registry, list)
                redis.call('HDEL', dead_since, list)
            end
        elseif scan_all then
            redis.call('HDEL', dead_since, list)
        end
    end
    for _, holder in ipairs(redis.call('SMEMBERS', KEYS[5])) do
        if is_dead(holder) then
            table.insert(dead_holders, holder)
        end
    end
end

local function reply(queue, item)
    local out = {queue, item, restored}
    for _, holder in ipairs(dead_holders) do
        table.insert(out, holder)
    end
    return out
end

for i = 6, #KEYS do
    local item = redis.call('RPOP', KEYS[i])
    if item then
        local list = base .. '|' .. KEYS[i]
        redis.call('LPUSH', list, item)
        redis.call('HSET', registry, list, KEYS[i])
        return reply(KEYS[i], item)
    end
end
return reply('', '')
