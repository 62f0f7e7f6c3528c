-- Record that a consumer holds a delivered message (worker/broker/transport.py, QoS.append), in the
-- same step that clears its in-flight entry, and only if that entry was still there: a consumer
-- taken for dead (a frozen process whose alive key lapsed) has had its in-flight messages put back
-- on their queue, and must not run one again.
--
-- KEYS[1] the in-flight list; KEYS[2] kombu's unacked index (zset); KEYS[3] kombu's unacked hash;
-- KEYS[4] this consumer's holdings (set of delivery tags); KEYS[5] the set of consumers that hold.
-- ARGV[1] the in-flight item; ARGV[2] delivery tag; ARGV[3] epoch seconds; ARGV[4] kombu's record;
-- ARGV[5] this consumer's in-flight base.
-- Returns 1 when recorded, 0 when the entry had gone (the message is not this consumer's to run).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
    return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('SADD', KEYS[5], ARGV[5])
return 1
