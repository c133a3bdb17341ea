-- The benchmark data set, generated inside the server (no row-by-row client traffic).
--
-- bench/run.sh replaces the @NAME@ placeholders before it sends this file, after schema/shop.sql
-- was loaded into an empty database. Everything is deterministic: the "random" numbers are
-- u(tag, n) = first 32 bits of MD5(tag || n) / 2^32, uniform in (0, 1), so two runs with the same
-- sizes produce the same rows (and the same benchmark clients).
--
-- Shape (defaults of run.sh in brackets):
--   users          @USERS@ [50,000]: user 1 is the admin, users 2 .. @SELLERS@+1 sellers, the rest
--                  customers; every user has an e-mail address.
--   shops/uploads  one shop per seller except every 10th (those show the placeholder logo), each with
--                  an upload row for its logo; one more upload for the header logo (setting).
--   products       @PRODUCTS@, every 20th in-house (admin), the others owned by sellers.
--   tokens         @TOKENS@ Sanctum tokens: token id t belongs to user 1 + (t - 1) mod @USERS@, and
--                  its plain-text secret is 'bench-<t>' (the column holds SHA-256 of it), so a
--                  client authenticates with "Authorization: Bearer <t>|bench-<t>".
--   conversations  @CONVS@, sender = a customer picked with P(rank) ~ rank^-1/2 (a few customers
--                  started hundreds of conversations, most one or two); receiver = a seller (every
--                  20th conversation: the admin).
--   messages       @MSGS@: message i <= @CONVS@ opens conversation i; the others go to conversation
--                  1 + floor(@CONVS@ * u^3), a Zipf-like skew (conversation 1 gets ~2 % of all
--                  messages, the median conversation ~5). Authors alternate between the two parties.

SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO';
SET SESSION time_zone = '+00:00';
SET SESSION unique_checks = 0;
SET SESSION foreign_key_checks = 0;
SET @base := TIMESTAMP'2024-01-01 00:00:00';

-- ---------------------------------------------------------------- settings, translations
INSERT INTO business_settings (id, type, value, lang, created_at, updated_at) VALUES
 (1, 'current_version', '9.8.1', NULL, @base, @base),
 (2, 'site_name', 'Bench Shop', NULL, @base, @base),
 (3, 'header_logo', '@HEADER_UPLOAD@', NULL, @base, @base);

INSERT INTO translations (id, lang, lang_key, lang_value, created_at, updated_at) VALUES
 (1, 'en', 'conversation_created', 'Conversation created', @base, @base),
 (2, 'en', 'message', 'Message', @base, @base),
 (3, 'en', 'sender', 'Sender', @base, @base),
 (4, 'en', 'see_details', 'See Details', @base, @base),
 (5, 'en', 'hi_you_recieved_a_message_from', 'Hi! You recieved a message from ', @base, @base),
 (6, 'en', 'user_is_banned', 'user is banned', @base, @base),
 (7, 'en', 'we_are_under_maintenance', 'We are Under Maintenance', @base, @base);

-- ---------------------------------------------------------------- users
INSERT INTO users (id, user_type, name, email, email_verified_at, password, balance, banned, created_at, updated_at)
SELECT seq,
       CASE WHEN seq = 1 THEN 'admin' WHEN seq <= @SELLERS@ + 1 THEN 'seller' ELSE 'customer' END,
       CONCAT(CASE WHEN seq = 1 THEN 'Admin' WHEN seq <= @SELLERS@ + 1 THEN 'Seller ' ELSE 'Customer ' END,
              IF(seq = 1, '', seq)),
       CONCAT('user', seq, '@bench.test'),
       @base, NULL, 0, 0,
       @base + INTERVAL seq SECOND, @base + INTERVAL seq SECOND
FROM seq_1_to_@USERS@;

-- ---------------------------------------------------------------- uploads, shops
INSERT INTO uploads (id, file_original_name, file_name, user_id, file_size, extension, type, created_at, updated_at)
SELECT seq, CONCAT('logo-', seq), CONCAT('uploads/all/bench-logo-', seq, '.png'), seq + 1, 4096, 'png', 'image', @base, @base
FROM seq_1_to_@SELLERS@;
INSERT INTO uploads (id, file_original_name, file_name, user_id, file_size, extension, type, created_at, updated_at)
VALUES (@HEADER_UPLOAD@, 'header-logo', 'uploads/all/bench-header-logo.png', 1, 4096, 'png', 'image', @base, @base);

INSERT INTO shops (id, user_id, name, logo, slug, address, verification_status, created_at, updated_at)
SELECT seq, seq + 1, CONCAT('Shop of seller ', seq + 1), CAST(seq AS CHAR), CONCAT('shop-', seq), 'Bench street 1', 1, @base, @base
FROM seq_1_to_@SELLERS@
WHERE seq % 10 <> 0;

-- ---------------------------------------------------------------- products
INSERT INTO products (id, name, added_by, user_id, category_id, unit_price, slug, created_at, updated_at)
SELECT seq, CONCAT('Product ', seq),
       IF(seq % 20 = 0, 'admin', 'seller'),
       IF(seq % 20 = 0, 1, 2 + (seq % @SELLERS@)),
       1, 10 + (seq % 90), CONCAT('product-', seq), @base, @base
FROM seq_1_to_@PRODUCTS@;

-- ---------------------------------------------------------------- tokens
INSERT INTO personal_access_tokens (id, tokenable_type, tokenable_id, name, token, abilities, last_used_at, expires_at, created_at, updated_at)
SELECT seq, 'App\\Models\\User', 1 + (seq - 1) % @USERS@, 'bench',
       SHA2(CONCAT('bench-', seq), 256), '["*"]', NULL, NULL,
       @base + INTERVAL seq SECOND, @base + INTERVAL seq SECOND
FROM seq_1_to_@TOKENS@;

-- ---------------------------------------------------------------- conversations
-- Customers are users @SELLERS@+2 .. @USERS@; rank r = floor(n_customers * u^2).
INSERT INTO conversations (id, sender_id, receiver_id, title, sender_viewed, receiver_viewed, created_at, updated_at)
SELECT seq,
       @SELLERS@ + 2 + FLOOR((@USERS@ - @SELLERS@ - 1)
           * POW((CONV(LEFT(MD5(CONCAT('cs', seq)), 8), 16, 10) + 0.5) / 4294967296, 2)),
       IF(seq % 20 = 0, 1, 2 + CONV(LEFT(MD5(CONCAT('cr', seq)), 8), 16, 10) % @SELLERS@),
       IF(seq % 7 = 0, NULL, CONCAT('Question about product ', 1 + seq % @PRODUCTS@)),
       1, seq % 2,
       @base + INTERVAL seq SECOND, @base + INTERVAL seq SECOND
FROM seq_1_to_@CONVS@;

-- ---------------------------------------------------------------- messages
-- Message times: 10 s apart, in id order (ids are chronological like in the shop).
INSERT INTO messages (id, conversation_id, user_id, message, created_at, updated_at)
SELECT s.seq, c.id,
       IF(s.seq <= @CONVS@ OR s.seq % 3 <> 0, c.sender_id, c.receiver_id),
       CONCAT(ELT(1 + s.seq % 8,
                  'Hello, is this still available?',
                  'Yes, it is in stock.',
                  'Can you ship it to Chattogram by Friday?',
                  'Thanks!',
                  'What sizes do you have? I need a medium, or a large if the medium runs small.',
                  'The price is 1200 with delivery.',
                  'OK',
                  'I sent the payment, please check and confirm the order when you can.'),
              ' #', s.seq),
       @base + INTERVAL (@CONVS@ + s.seq * 10) SECOND,
       @base + INTERVAL (@CONVS@ + s.seq * 10) SECOND
FROM (SELECT seq,
             IF(seq <= @CONVS@, seq,
                1 + FLOOR(@CONVS@ * POW((CONV(LEFT(MD5(CONCAT('mc', seq)), 8), 16, 10) + 0.5) / 4294967296, 3))) AS cid
      FROM seq_1_to_@MSGS@) s
JOIN conversations c ON c.id = s.cid
ORDER BY s.seq;

-- A conversation's updated_at is its last message's time.
UPDATE conversations c
JOIN (SELECT conversation_id, MAX(created_at) AS last_at FROM messages GROUP BY conversation_id) m
  ON m.conversation_id = c.id
SET c.updated_at = m.last_at;

ANALYZE TABLE users, shops, uploads, products, personal_access_tokens, conversations, messages;
