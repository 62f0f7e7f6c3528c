-- Acknowledge a delivered message (worker/broker/transport.py, QoS.ack): remove kombu's unacked
-- record, but only while this consumer still holds it. A consumer taken for dead (frozen past its
-- alive TTL, or cut off by a broker restart) has had its holdings put back on their queue, and the
-- message may now be recorded under the same delivery tag for the consumer that took it next:
-- a late ack from the first must not erase that record, or nothing would bring the message back
-- if its new holder died.
--
-- KEYS[1] kombu's unacked index (zset); KEYS[2] kombu's unacked hash; KEYS[3] this consumer's
-- holdings (set of delivery tags). ARGV[1] the delivery tag.
-- Returns 1 when the record was this consumer's and is gone, 0 when it was no longer this consumer's.
-- Deletions only: a full Redis (maxmemory) still takes it.
if redis.call('SREM', KEYS[3], ARGV[1]) == 0 then
    return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
