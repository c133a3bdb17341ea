//! `translate()` over the shop's `translations` table (COMPAT §7.1, K8).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::db::Pools;

use crate::cache::TtlCache;
use crate::laravel::text::{php_trim, translation_key};

type LangMap = Arc<HashMap<String, String>>;

pub struct Translator {
    pools: Pools,
    fallback_language: String,
    maps: TtlCache<String, LangMap>,
}

impl Translator {
    /// `ttl` = `SHOPCHAT_TRANSLATION_TTL` (§11.1); zero reads the table every time.
    pub fn new(pools: Pools, fallback_language: String, ttl: Duration) -> Self {
        Translator {
            pools,
            fallback_language,
            maps: TtlCache::new(ttl, 256),
        }
    }

    /// Drops expired language maps and gives their memory back (idle release).
    pub fn purge_expired(&self) {
        self.maps.purge_expired();
    }

    /// Language maps held, for the metrics.
    pub fn cache_size(&self) -> usize {
        self.maps.len()
    }

    /// `T(text)` in `locale`. A key missing from `en` is inserted like PHP does
    /// unless `insert_missing` is false (shadow comparisons must not write).
    pub async fn translate(
        &self,
        text: &str,
        locale: &str,
        now: &str,
        insert_missing: bool,
    ) -> Result<String, sqlx::Error> {
        let key = translation_key(text);
        let en = self.map("en").await?;
        let missing = !en.contains_key(&key);
        if missing && insert_missing {
            let value: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            sqlx::query("INSERT INTO translations (lang, lang_key, lang_value, updated_at, created_at) VALUES ('en', ?, ?, ?, ?)")
                .bind(&key)
                .bind(&value)
                .bind(now)
                .bind(now)
                .execute(&self.pools.current())
                .await?;
            self.maps.remove(&"en".to_string());
        }
        if let Some(v) = self.map(locale).await?.get(&key) {
            return Ok(php_trim(v).to_string());
        }
        if let Some(v) = self.map(&self.fallback_language).await?.get(&key) {
            return Ok(php_trim(v).to_string());
        }
        Ok(match en.get(&key) {
            Some(v) if !missing => php_trim(v).to_string(),
            _ => php_trim(text).to_string(),
        })
    }

    /// `map(lang)`: rows in id order, the last row of a key wins and a NULL
    /// winner counts as absent. `WHERE lang = ?` follows the column collation
    /// (case-insensitive) like PHP.
    async fn map(&self, lang: &str) -> Result<LangMap, sqlx::Error> {
        // D11: a locale with a path separator is a locale without translations.
        // So is one with a character beyond U+FFFF: `translations.lang` is a
        // utf8mb3 column, and comparing it with such a value is MySQL error
        // 1267 (illegal mix of collations) — a 500 in PHP — while no stored
        // value could match it anyway.
        if lang.contains('/') || lang.contains('\\') || lang.chars().any(|c| c > '\u{FFFF}') {
            return Ok(Arc::new(HashMap::new()));
        }
        if let Some(map) = self.maps.get(&lang.to_string()) {
            return Ok(map);
        }
        let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT lang_key, lang_value FROM translations WHERE lang = ? ORDER BY id",
        )
        .bind(lang)
        .fetch_all(&self.pools.current())
        .await?;
        let mut folded: HashMap<String, Option<String>> = HashMap::with_capacity(rows.len());
        for (key, value) in rows {
            if let Some(key) = key {
                folded.insert(key, value);
            }
        }
        let map: LangMap = Arc::new(
            folded
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
        );
        self.maps.insert(lang.to_string(), map.clone());
        Ok(map)
    }
}
