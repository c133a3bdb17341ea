//! `uploaded_asset()`, `get_setting()` and file URLs (COMPAT §7.2–§7.4, K12).

use std::time::Duration;

use crate::db::Pools;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::cache::TtlCache;
use crate::config::FileSystem;

/// The upload row fields `asset()` needs.
#[derive(Clone, Debug)]
struct Upload {
    file_name: Option<String>,
    external_link: Option<String>,
}

pub struct Assets {
    pools: Pools,
    filesystem: FileSystem,
    settings: TtlCache<String, Option<String>>,
    uploads: TtlCache<String, Option<Upload>>,
}

impl Assets {
    pub fn new(pools: Pools, filesystem: FileSystem, settings_ttl: Duration) -> Self {
        Assets {
            pools,
            filesystem,
            settings: TtlCache::new(settings_ttl, 64),
            // Upload rows may be cached for 60 s (§11.1).
            uploads: TtlCache::new(Duration::from_secs(60), 4096),
        }
    }

    /// Drops expired settings and upload rows and gives their memory back (idle release).
    pub fn purge_expired(&self) {
        self.settings.purge_expired();
        self.uploads.purge_expired();
    }

    /// Entries held per cache, for the metrics.
    pub fn cache_sizes(&self) -> [(&'static str, usize); 2] {
        [
            ("business_settings", self.settings.len()),
            ("uploads", self.uploads.len()),
        ]
    }

    /// `get_setting(key)`: the lowest-id row whose `type` equals `key` exactly
    /// (the column collation is case-insensitive, so the match is made here).
    pub async fn setting(&self, key: &str) -> Result<Option<String>, sqlx::Error> {
        if let Some(v) = self.settings.get(&key.to_string()) {
            return Ok(v);
        }
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT type, value FROM business_settings WHERE type = ? ORDER BY id")
                .bind(key)
                .fetch_all(&self.pools.current())
                .await?;
        let value = rows
            .into_iter()
            .find(|(t, _)| t == key)
            .and_then(|(_, v)| v);
        self.settings.insert(key.to_string(), value.clone());
        Ok(value)
    }

    /// `uploaded_asset(v)` for the request's `<root>`.
    pub async fn asset(&self, root: &str, v: Option<&str>) -> Result<String, sqlx::Error> {
        let Some(v) = v else {
            return Ok(placeholder(root));
        };
        let upload = match self.uploads.get(&v.to_string()) {
            Some(u) => u,
            None => {
                // Bound as the stored string so MySQL coerces it exactly as
                // PHP's query does ("" → no row, "12" → 12).
                let row: Option<(Option<String>, Option<String>)> =
                    sqlx::query_as("SELECT file_name, external_link FROM uploads WHERE id = ? AND deleted_at IS NULL LIMIT 1")
                        .bind(v)
                        .fetch_optional(&self.pools.current())
                        .await?;
                let upload = row.map(|(file_name, external_link)| Upload {
                    file_name,
                    external_link,
                });
                self.uploads.insert(v.to_string(), upload.clone());
                upload
            }
        };
        Ok(match upload {
            None => placeholder(root),
            Some(Upload {
                external_link: Some(link),
                ..
            }) if !link.is_empty() => link,
            Some(Upload { file_name, .. }) => {
                file_url(&self.filesystem, root, file_name.as_deref().unwrap_or(""))
            }
        })
    }

    /// The in-house logo: `asset(setting('header_logo'))`.
    pub async fn header_logo(&self, root: &str) -> Result<String, sqlx::Error> {
        let id = self.setting("header_logo").await?;
        self.asset(root, id.as_deref()).await
    }
}

/// Always local, whatever the driver (§7.2).
pub fn placeholder(root: &str) -> String {
    format!("{root}/public/assets/img/placeholder.jpg")
}

/// Characters kept verbatim in an S3 path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `file_url(f)` for the configured driver (§7.4).
pub fn file_url(fs: &FileSystem, root: &str, f: &str) -> String {
    match fs {
        FileSystem::Local => format!("{root}/{}", format!("public/{f}").trim_matches('/')),
        FileSystem::S3 {
            url,
            bucket,
            region,
        } if url.is_empty() => {
            let path: Vec<String> = f
                .trim_start_matches('/')
                .split('/')
                .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
                .collect();
            format!(
                "https://{bucket}.s3.{region}.amazonaws.com/{}",
                path.join("/")
            )
        }
        FileSystem::S3 { url, .. } | FileSystem::Backblaze { url } => {
            format!(
                "{}/{}",
                url.trim_end_matches('/'),
                f.trim_start_matches('/')
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_per_driver() {
        let root = "http://127.0.0.1:8081";
        assert_eq!(
            file_url(
                &FileSystem::Local,
                root,
                "uploads/all/Ab12Cdtech-haven-logo.png"
            ),
            "http://127.0.0.1:8081/public/uploads/all/Ab12Cdtech-haven-logo.png"
        );
        let s3 = FileSystem::S3 {
            url: "https://cdn.shop.com/".into(),
            bucket: "b".into(),
            region: "r".into(),
        };
        assert_eq!(
            file_url(&s3, root, "/uploads/all/x.png"),
            "https://cdn.shop.com/uploads/all/x.png"
        );
        let bucket = FileSystem::S3 {
            url: String::new(),
            bucket: "shop".into(),
            region: "eu-west-1".into(),
        };
        assert_eq!(
            file_url(&bucket, root, "uploads/all/a b.png"),
            "https://shop.s3.eu-west-1.amazonaws.com/uploads/all/a%20b.png"
        );
        let b2 = FileSystem::Backblaze {
            url: "https://f000.backblazeb2.com/file/shop".into(),
        };
        assert_eq!(
            file_url(&b2, root, "uploads/x.png"),
            "https://f000.backblazeb2.com/file/shop/uploads/x.png"
        );
        assert_eq!(
            placeholder(root),
            "http://127.0.0.1:8081/public/assets/img/placeholder.jpg"
        );
    }
}
