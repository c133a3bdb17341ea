-- Optional secondary indexes recommended for shopchat (SCHEMA.md §4).
--
-- None is required for correctness: every query of shopchat has an explicit
-- ORDER BY, so results do not change. They are plain, additive indexes created
-- online (ALGORITHM=INPLACE, LOCK=NONE; MySQL >= 5.6 / MariaDB >= 10.0). On very
-- large tables of old servers use pt-online-schema-change or gh-ost instead.
-- The shopchat_ prefix avoids clashes with index names a future product update
-- might add. To remove one: ALTER TABLE <table> DROP INDEX <name>;
--
-- Apply by hand, once, on the shop's database, e.g.
--   mariadb -u<admin> -p <shop_db> < schema/recommended-indexes.sql
-- Running it a second time fails with "Duplicate key name" (nothing changes).

-- messages/{id} (count and page), get-new-messages (the poll: the hottest query)
ALTER TABLE messages ADD INDEX shopchat_messages_conversation_id_id (conversation_id, id), ALGORITHM=INPLACE, LOCK=NONE;

-- conversation list (WHERE sender_id = ? ORDER BY id DESC, its count) and the D6 lookup
ALTER TABLE conversations ADD INDEX shopchat_conversations_sender_id_id (sender_id, id), ALGORITHM=INPLACE, LOCK=NONE;

-- shop name/logo per receiver (list, create-conversation)
ALTER TABLE shops ADD INDEX shopchat_shops_user_id (user_id), ALGORITHM=INPLACE, LOCK=NONE;

-- T() map loads (only matters with a short translation cache)
ALTER TABLE translations ADD INDEX shopchat_translations_lang (lang), ALGORITHM=INPLACE, LOCK=NONE;

-- setting('header_logo') (only matters with a short settings cache)
ALTER TABLE business_settings ADD INDEX shopchat_business_settings_type (type(191)), ALGORITHM=INPLACE, LOCK=NONE;
