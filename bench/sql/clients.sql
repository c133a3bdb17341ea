-- The benchmark's clients: who calls what. bench/run.sh replaces the @NAME@ placeholders, runs each
-- SELECT with `--batch --skip-column-names` and keeps the rows in one TSV file per set (the same files
-- drive wrk's Lua script and the database-ceiling tool). Every row has five columns:
--
--   token_id  user_id  conversation_id  last_message_id  product_id
--
-- A client authenticates as "Bearer <token_id>|bench-<token_id>"; token_id is one of the user's
-- tokens (token t belongs to user 1 + (t - 1) mod @USERS@). Conversations whose id is a multiple of
-- 10 are only ever written to (insert-message), the others only read, so a "nothing new" poll stays
-- nothing new for the whole run.
--
-- Run one SELECT at a time: run.sh splits this file on the "-- set: NAME" markers.

-- set: pollers
-- messages/{id} and get-new-messages: a conversation picked by activity (a random message's
-- conversation, so long conversations are read more often, like in a shop), seen by one of its two
-- parties; last_message_id = the conversation's newest message when the set was made.
SELECT p.user_id + @USERS@ * (p.k % @TOKENS_PER_USER@) AS token_id,
       p.user_id, p.cid, l.last_id, 0
FROM (SELECT s.seq AS k, c.id AS cid, IF(s.seq % 2 = 0, c.sender_id, c.receiver_id) AS user_id
      FROM seq_1_to_@SAMPLE2@ s
      JOIN messages m ON m.id = 1 + FLOOR(@MSGS@ * (CONV(LEFT(MD5(CONCAT('pk', s.seq)), 8), 16, 10) + 0.5) / 4294967296)
      JOIN conversations c ON c.id = m.conversation_id
      WHERE c.id % 10 <> 0) p
JOIN (SELECT conversation_id, MAX(id) AS last_id FROM messages GROUP BY conversation_id) l
  ON l.conversation_id = p.cid
ORDER BY p.k
LIMIT @SAMPLE@;

-- set: listers
-- conversations: the sender of a uniformly picked conversation (customers who started many
-- conversations are picked more often).
SELECT c.sender_id + @USERS@ * (s.seq % @TOKENS_PER_USER@), c.sender_id, 0, 0, 0
FROM seq_1_to_@SAMPLE@ s
JOIN conversations c ON c.id = 1 + FLOOR(@CONVS@ * (CONV(LEFT(MD5(CONCAT('cl', s.seq)), 8), 16, 10) + 0.5) / 4294967296)
ORDER BY s.seq;

-- set: writers
-- insert-message: a conversation whose id is a multiple of 10, written by one of its parties.
SELECT IF(s.seq % 2 = 0, c.sender_id, c.receiver_id) + @USERS@ * (s.seq % @TOKENS_PER_USER@),
       IF(s.seq % 2 = 0, c.sender_id, c.receiver_id), c.id, 0, 0
FROM seq_1_to_@SAMPLE@ s
JOIN conversations c ON c.id = 10 * (1 + FLOOR((@CONVS@ DIV 10) * (CONV(LEFT(MD5(CONCAT('iw', s.seq)), 8), 16, 10) + 0.5) / 4294967296))
ORDER BY s.seq;

-- set: creators
-- create-conversation: a random customer asks about a random product.
SELECT u.id + @USERS@ * (u.k % @TOKENS_PER_USER@), u.id, 0, 0,
       1 + FLOOR(@PRODUCTS@ * (CONV(LEFT(MD5(CONCAT('cp', u.k)), 8), 16, 10) + 0.5) / 4294967296)
FROM (SELECT seq AS k,
             @SELLERS@ + 2 + FLOOR((@USERS@ - @SELLERS@ - 1) * (CONV(LEFT(MD5(CONCAT('cc', seq)), 8), 16, 10) + 0.5) / 4294967296) AS id
      FROM seq_1_to_@SAMPLE@) u
ORDER BY u.k;

-- set: hot
-- The one-client runs (the PHP comparison: wrk -t2 -c64 with a single token): the sender of the
-- conversation whose length is closest to 5,933 messages (the PHP measurement's conversation), on
-- its first token, asking for messages above the conversation's newest one.
SELECT c.sender_id, c.sender_id, c.id, l.last_id, 0
FROM (SELECT conversation_id, MAX(id) AS last_id
      FROM messages WHERE conversation_id % 10 <> 0
      GROUP BY conversation_id ORDER BY ABS(COUNT(*) - 5933), conversation_id LIMIT 1) l
JOIN conversations c ON c.id = l.conversation_id;
