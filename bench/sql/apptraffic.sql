-- The simulated app users of bench/apptraffic.sh: two per conversation, its sender (a customer)
-- and its receiver (a seller), each with a token of its own. bench/apptraffic.sh replaces
-- @USERS@ (users of the data set), @TOKENS@ (its tokens), @TOKENS_PER_USER@ and @PAIRS@.
--
-- Customers: at most one conversation per token they have (their first @TOKENS_PER_USER@).
-- Sellers answer many conversations, each from an app session of its own: a token per
-- conversation is added for them (ids above @TOKENS@, secret bench-<id> like the others),
-- removed again by the next run.

DELETE FROM personal_access_tokens WHERE id > @TOKENS@;
DROP TABLE IF EXISTS apptraffic_pairs;
CREATE TABLE apptraffic_pairs (
    cid INT PRIMARY KEY,
    sender_token BIGINT UNSIGNED NOT NULL,
    receiver_id INT NOT NULL,
    receiver_token BIGINT UNSIGNED NOT NULL,
    newest INT NOT NULL
);
INSERT INTO apptraffic_pairs
SELECT t.cid, t.sender_id + @USERS@ * (t.sn - 1), t.receiver_id, @TOKENS@ + t.cid,
       COALESCE((SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = t.cid), 0)
FROM (SELECT c.id AS cid, c.sender_id, c.receiver_id,
             ROW_NUMBER() OVER (PARTITION BY c.sender_id ORDER BY c.id) AS sn
      FROM conversations c
      WHERE c.id % 10 <> 0 AND c.sender_id <> c.receiver_id) t
WHERE t.sn <= @TOKENS_PER_USER@
ORDER BY t.cid
LIMIT @PAIRS@;
INSERT INTO personal_access_tokens (id, tokenable_type, tokenable_id, name, token, abilities, created_at, updated_at)
SELECT receiver_token, 'App\\Models\\User', receiver_id, 'apptraffic',
       SHA2(CONCAT('bench-', receiver_token), 256), '["*"]', NOW(), NOW()
FROM apptraffic_pairs;

-- set: pairs (two rows per conversation: sender, then receiver; bench/sql/clients.sql's columns)
SELECT token, 0, cid, newest, 0 FROM (
    SELECT cid, 0 AS side, sender_token AS token, newest FROM apptraffic_pairs
    UNION ALL
    SELECT cid, 1, receiver_token, newest FROM apptraffic_pairs
) p ORDER BY cid, side;
