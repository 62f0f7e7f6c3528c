-- Record a bulk job's final outcome once: stream entry (kind 'bulk') and live message.
-- KEYS: 1 outcome stream, 2 the bulk's final marker
-- ARGV: 1 json, 2 bulk id, 3 site code, 4 state, 5 stream maxlen (approximate), 6 marker ttl (s), 7 channel
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[6]) == false then
  return {0, ''}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*',
  '$s_outcome', ARGV[1], '$s_kind', 'bulk', '$s_request_id', ARGV[2], '$s_package_id', '',
  '$s_site_code', ARGV[3], '$s_status', ARGV[4], '$s_final', '1')
redis.call('SET', KEYS[2], id, 'XX', 'KEEPTTL')
redis.call('PUBLISH', ARGV[7], ARGV[1])
return {1, id}
