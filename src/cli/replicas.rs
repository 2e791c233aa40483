//! Where `keys promote` and `keys retire` read what the running replicas report about their
//! keys: each replica's admin listener (`--admin URL`, repeated), or every live replica's
//! report in the Redis they share (`--redis URL`; [`crate::replicas`] writes them). `--expect N`
//! says how many replicas must answer, so one that is missing is noticed rather than skipped.

use std::path::PathBuf;
use std::time::Duration;

use super::keys::{fetch_usage, parse_usage, UsageReport};

/// Longest wait for Redis, per command.
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);
/// Most reports read from Redis: far above any deployment's replica count, and a bound on
/// what a polluted prefix can make the command read.
const MAX_REPORTS: usize = 1024;

/// Where the replicas' reports come from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplicaArgs {
    /// Admin listener of a running proxy (http://host:port); repeat for every replica.
    #[arg(long, value_name = "URL")]
    pub admin: Vec<String>,
    /// The Redis the replicas share (their `replay.redis.url`): reads every live replica's
    /// report.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// File holding that Redis's password.
    #[arg(long, value_name = "FILE", requires = "redis")]
    pub redis_password_file: Option<PathBuf>,
    /// The replicas' `replay.redis.prefix`.
    #[arg(long, value_name = "PREFIX", default_value = "fieldseal:")]
    pub redis_prefix: String,
    /// How many replicas must report (the deployment's replica count): fewer is refused.
    #[arg(long, value_name = "N")]
    pub expect: Option<usize>,
}

/// One replica's report, and where it was read.
#[derive(Debug, Clone)]
pub struct Report {
    /// `http://10.0.0.7:9901` or `redis replica:web-7f9c-41`.
    pub from: String,
    pub usage: UsageReport,
}

impl ReplicaArgs {
    /// Whether any source was named.
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.redis.is_none()
    }

    /// Every named replica's report. Fails when a named admin listener does not answer, when
    /// Redis cannot be read, or when fewer than `--expect` replicas report.
    pub fn reports(&self) -> Result<Vec<Report>, String> {
        let mut out = Vec::new();
        for url in &self.admin {
            let usage = fetch_usage(url).map_err(|m| format!("{url}: {m}"))?;
            out.push(Report {
                from: url.clone(),
                usage,
            });
        }
        if let Some(url) = &self.redis {
            out.extend(self.read_redis(url)?);
        }
        if let Some(n) = self.expect {
            if out.len() < n {
                let seen: Vec<&str> = out.iter().map(|r| r.from.as_str()).collect();
                return Err(format!(
                    "{} replica(s) reported, {n} expected (--expect): {}",
                    out.len(),
                    if seen.is_empty() {
                        "none".to_string()
                    } else {
                        seen.join(", ")
                    }
                ));
            }
        }
        Ok(out)
    }

    fn read_redis(&self, url: &str) -> Result<Vec<Report>, String> {
        let password = match &self.redis_password_file {
            Some(path) => {
                let (bytes, _) = crate::secret_file::read(path)?;
                let text = std::str::from_utf8(bytes.trim_ascii())
                    .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
                Some(zeroize::Zeroizing::new(text.to_string()))
            }
            None => None,
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| format!("--redis {url}: {e}"))?;
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(p) = &password {
            settings = settings.set_password(p.as_str());
        }
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| format!("--redis {url}: {e}"))?;
        let pattern = format!("{}replica:*", self.redis_prefix);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let values: Vec<(String, Option<String>)> = runtime.block_on(async {
            let read = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(256)
                        .query_async(&mut conn)
                        .await?;
                    keys.extend(batch);
                    if next == 0 || keys.len() > MAX_REPORTS {
                        break;
                    }
                    cursor = next;
                }
                keys.sort();
                keys.dedup();
                keys.truncate(MAX_REPORTS);
                if keys.is_empty() {
                    return Ok::<_, redis::RedisError>(Vec::new());
                }
                let docs: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
                Ok(keys.into_iter().zip(docs).collect())
            };
            match tokio::time::timeout(REDIS_TIMEOUT, read).await {
                Ok(r) => r.map_err(|e| format!("--redis {url}: {e}")),
                Err(_) => Err(format!("--redis {url}: timed out")),
            }
        })?;
        let mut out = Vec::new();
        for (key, doc) in values {
            // Expired between SCAN and MGET: that replica is gone.
            let Some(doc) = doc else { continue };
            let name = key
                .strip_prefix(&self.redis_prefix)
                .unwrap_or(&key)
                .to_string();
            let usage = parse_usage(&doc).map_err(|m| format!("redis {name}: {m}"))?;
            out.push(Report {
                from: format!("redis {name}"),
                usage,
            });
        }
        Ok(out)
    }
}

/// Whether a replica can open tokens of `kid` (it has it, not disabled), from its report.
pub fn promote_verdict(kid: &str, report: &UsageReport) -> Result<String, String> {
    let loaded: Vec<String> = report
        .keys
        .iter()
        .filter(|r| r.state != "unknown")
        .map(|r| format!("{} {}", r.id, r.state))
        .collect();
    match report.keys.iter().find(|r| r.id == kid) {
        Some(row) if row.state == "active" || row.state == "decrypt_only" => {
            Ok(format!("has {kid} ({})", row.state))
        }
        Some(row) if row.state == "disabled" => Err(format!("has {kid} disabled")),
        _ => Err(format!(
            "has not loaded {kid} yet (its keyring: {}); update its Secret or file and wait for the reload",
            if loaded.is_empty() {
                "none".to_string()
            } else {
                loaded.join(", ")
            }
        )),
    }
}
