//! Admission limits on top of `max_connections`: stream opens per client
//! IP in a fixed window (429 with `Retry-After`), and who the client is
//! behind trusted proxies. Per-user stream limits live in the hub, where
//! streams are registered.

use crate::config::{LimitsConfig, UserPolicy};
use http::HeaderMap;
use ipnet::IpNet;
use metrics::Counter;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Streams one user may hold at once (0: unlimited), and what happens to
/// one stream more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerUser {
    /// Most streams per user.
    pub max: usize,
    /// Refuse the new stream, or end the oldest.
    pub policy: UserPolicy,
}

/// What to do with a user's new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerUserVerdict {
    /// Admit it.
    Admit,
    /// Refuse it (`429 too_many_user_connections`).
    Refuse,
    /// Admit it and end this many of the user's oldest streams.
    ReplaceOldest(usize),
}

impl PerUser {
    /// The verdict for a new stream of a user who holds `held` already.
    pub fn check(&self, held: usize) -> PerUserVerdict {
        if self.max == 0 || held < self.max {
            return PerUserVerdict::Admit;
        }
        match self.policy {
            UserPolicy::Refuse => PerUserVerdict::Refuse,
            UserPolicy::ReplaceOldest => PerUserVerdict::ReplaceOldest(held + 1 - self.max),
        }
    }
}

/// A limit a request ran into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Too many stream opens from one client IP in the window.
    #[error("{detail}")]
    PerIp {
        /// What happened, for the client.
        detail: String,
        /// Seconds until the window ends.
        retry_after: u64,
    },
}

/// The server's admission limits and their counters.
pub struct Limits {
    per_ip: u32,
    window: Duration,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    trusted: Vec<IpNet>,
    per_user: usize,
    per_user_policy: crate::config::UserPolicy,
    ip_rejected: AtomicU64,
    ip_rejected_metric: Counter,
}

impl Limits {
    /// Limits as configured in `[server.limits]`.
    pub fn new(cfg: &LimitsConfig) -> Limits {
        Limits {
            per_ip: cfg.per_ip_attempts,
            window: cfg.per_ip_window,
            windows: Mutex::new(HashMap::new()),
            trusted: cfg.trusted_proxies.clone(),
            per_user: cfg.per_user_connections,
            per_user_policy: cfg.per_user_policy,
            ip_rejected: AtomicU64::new(0),
            ip_rejected_metric: metrics::counter!("spout_limit_rejections_total", "limit" => "per_ip"),
        }
    }

    /// The client's address: the peer, or — when the peer is a trusted
    /// proxy — the last `X-Forwarded-For` hop that is not a trusted proxy.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut ip = peer.ip();
        if !self.is_trusted(ip) {
            return ip;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        for hop in hops.into_iter().rev() {
            ip = hop;
            if !self.is_trusted(hop) {
                break;
            }
        }
        ip
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Counts one stream open by `ip`; refused with the seconds until its
    /// window ends once it is over `per_ip_attempts`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), LimitError> {
        if self.per_ip == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count <= self.per_ip {
            return Ok(());
        }
        let retry = self.window.saturating_sub(now.duration_since(*start));
        self.ip_rejected.fetch_add(1, Ordering::Relaxed);
        self.ip_rejected_metric.increment(1);
        let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
        Err(LimitError::PerIp {
            detail: format!(
                "{ip} opened more than {} streams in {}; retry in {secs}s",
                self.per_ip,
                humantime::format_duration(self.window)
            ),
            retry_after: secs.max(1),
        })
    }

    /// Forgets windows that have ended (called by the server's ticker).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|_, (start, _)| now.duration_since(*start) < self.window);
    }

    /// `/stats` view.
    pub fn to_json(&self) -> serde_json::Value {
        let tracked = self.windows.lock().map(|w| w.len()).unwrap_or(0);
        serde_json::json!({
            "per_ip_attempts": self.per_ip,
            "per_ip_window_ms": self.window.as_millis() as u64,
            "per_ip_rejected": self.ip_rejected.load(Ordering::Relaxed),
            "tracked_ips": tracked,
            "per_user_connections": self.per_user,
            "per_user_policy": match self.per_user_policy {
                crate::config::UserPolicy::Refuse => "refuse",
                crate::config::UserPolicy::ReplaceOldest => "replace_oldest",
            },
            "trusted_proxies": self.trusted.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: u32, trusted: &[&str]) -> Limits {
        let cfg = LimitsConfig {
            per_ip_attempts: per_ip,
            per_ip_window: Duration::from_secs(60),
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..LimitsConfig::default()
        };
        Limits::new(&cfg)
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let l = limits(0, &["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(
            l.client_ip(proxy, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(l.client_ip(stranger, &h), stranger.ip());
        // A client cannot smuggle an address in front of the real one.
        h.insert("x-forwarded-for", "1.1.1.1, 203.0.113.9".parse().unwrap());
        assert_eq!(
            l.client_ip(proxy, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn attempts_over_the_window_are_refused_with_retry_after() {
        let l = limits(2, &[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check_ip(ip).is_ok());
        assert!(l.check_ip(ip).is_ok());
        let LimitError::PerIp { retry_after, .. } = l.check_ip(ip).unwrap_err();
        assert_eq!(retry_after, 60);
        // Another client is not affected.
        assert!(l.check_ip("192.0.2.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn per_user_verdicts() {
        let refuse = PerUser {
            max: 2,
            policy: UserPolicy::Refuse,
        };
        assert_eq!(refuse.check(1), PerUserVerdict::Admit);
        assert_eq!(refuse.check(2), PerUserVerdict::Refuse);
        let replace = PerUser {
            policy: UserPolicy::ReplaceOldest,
            ..refuse
        };
        assert_eq!(replace.check(2), PerUserVerdict::ReplaceOldest(1));
        assert_eq!(replace.check(4), PerUserVerdict::ReplaceOldest(3));
        assert_eq!(
            PerUser::default().check(1000),
            PerUserVerdict::Admit,
            "0 = unlimited"
        );
    }
}
