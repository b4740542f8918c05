"""The Lua scripts of Redis presence (:mod:`gateway.presence.redis`).

A room is three keys in one hash slot (``KEYS[1..3]``, see ``RedisPresence.room_keys``):

1. a sorted set of connections, ``user<US>connection`` scored with the moment it expires;
2. a hash, user -> how many of the room's live connections are that user's;
3. a sorted set of the users in the hash, all scored 0: Redis orders equal scores by their
   bytes, which for UTF-8 is code point order, Python's.

Every script first drops the expired connections (a dead worker's) and the users they were the
last of, so the second and third keys always describe the first: a join's count is ``ZCARD``
and its first names one ``ZRANGE``, O(log N + names) in a room of N, where walking the room
made a storm of N joins cost O(N²) in Redis. Expired entries are dropped once, by whichever
script meets them first. A count comes with the moment it was read, in microseconds of Redis'
clock (``counted_at``): scripts run one at a time, so it orders every count of a room.
"""

from __future__ import annotations

NOW_MS = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
"""

_ROOM = (
    NOW_MS
    + """
local function user_of(member)
  local cut = string.find(member, string.char(31), 1, true)
  return cut and string.sub(member, 1, cut - 1) or member
end
local function forget(member)
  local user = user_of(member)
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    redis.call('ZREM', KEYS[3], user)
  end
end
local function add(member, expiry)
  if redis.call('ZADD', KEYS[1], expiry, member) == 1 then
    local user = user_of(member)
    if redis.call('HINCRBY', KEYS[2], user, 1) == 1 then
      redis.call('ZADD', KEYS[3], 0, user)
    end
  end
end
local function keep(ttl)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
local counted_at = tonumber(now[1]) * 1000000 + tonumber(now[2])
local function snapshot(limit)
  local names = {}
  if limit > 0 then names = redis.call('ZRANGE', KEYS[3], 0, limit - 1) end
  return {redis.call('ZCARD', KEYS[3]), names, counted_at}
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
  for _, member in ipairs(expired) do forget(member) end
end
"""
)

ROOM_WRITE = (
    _ROOM
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do add(ARGV[i], ms + ttl) end
keep(ttl)
return #ARGV - 1
"""
)
"""Score connections (``ARGV[2..]``) with a fresh expiry: a refresh, which also restores what
Redis lost (a restart), counted again as it comes back."""

ROOM_LEAVE = (
    _ROOM
    + """
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then forget(ARGV[i]) end
end
return {redis.call('ZCARD', KEYS[3]), counted_at}
"""
)
"""Connections leave (``ARGV``); the count of users still in the room, and when it was read."""

ROOM_SNAPSHOT = _ROOM + "return snapshot(tonumber(ARGV[1]))\n"

ROOM_MEMBERS = _ROOM + "return redis.call('ZRANGE', KEYS[3], 0, -1)\n"

CONNECTIONS_WRITE = (
    NOW_MS
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], ms + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1
"""
)
"""A user's connections, over every room and worker (one sorted set, no names to keep)."""

CONNECTIONS_LEAVE = """
for i = 1, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
return #ARGV
"""

CONNECTIONS_COUNT = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
return redis.call('ZCARD', KEYS[1])
"""
)

CLAIM = """
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

RELEASE = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return #KEYS
"""

RENEW = """
local lost = 0
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  elseif not holder then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1])
  else
    lost = lost + 1
  end
end
return lost
"""
"""Renew each key still ours, restore one gone with Redis (a restart), leave another's alone."""

SCRIPTS = {
    "room_write": ROOM_WRITE,
    "room_leave": ROOM_LEAVE,
    "room_snapshot": ROOM_SNAPSHOT,
    "room_members": ROOM_MEMBERS,
    "connections_write": CONNECTIONS_WRITE,
    "connections_leave": CONNECTIONS_LEAVE,
    "connections_count": CONNECTIONS_COUNT,
    "claim": CLAIM,
    "release": RELEASE,
    "renew": RENEW,
}
