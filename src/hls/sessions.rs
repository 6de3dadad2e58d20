//! Counting HLS viewers: HLS has no connection per viewer, so a viewer is a client (address
//! and `User-Agent`) that asked for a playlist recently. Pure: keys and explicit times in.
//! Bounded: at most [`MAX_CLIENTS`] are remembered; stale ones are forgotten first.

use std::collections::HashMap;
use std::sync::Mutex;

/// A client that has not asked for a playlist for this long has left.
pub const SESSION_MS: i64 = 30_000;
/// Clients remembered at most (a flood of fake clients cannot grow memory).
pub const MAX_CLIENTS: usize = 4096;

#[derive(Debug, Default)]
pub struct Sessions {
    last_seen_ms: Mutex<HashMap<u64, i64>>,
}

impl Sessions {
    /// Records a playlist request by client `key` at `now_ms`.
    pub fn seen(&self, key: u64, now_ms: i64) {
        let Ok(mut m) = self.last_seen_ms.lock() else {
            return;
        };
        if m.len() >= MAX_CLIENTS && !m.contains_key(&key) {
            m.retain(|_, t| now_ms - *t < SESSION_MS);
            if m.len() >= MAX_CLIENTS {
                return;
            }
        }
        m.insert(key, now_ms);
    }

    /// Clients seen within [`SESSION_MS`] of `now_ms`.
    pub fn count(&self, now_ms: i64) -> usize {
        self.last_seen_ms.lock().map_or(0, |m| {
            m.values().filter(|&&t| now_ms - t < SESSION_MS).count()
        })
    }
}

/// The key of a client: its IP address and `User-Agent`.
pub fn client_key(ip: Option<std::net::IpAddr>, user_agent: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    user_agent.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_count_while_they_poll_and_memory_stays_bounded() {
        let s = Sessions::default();
        s.seen(1, 0);
        s.seen(2, 1_000);
        s.seen(1, 2_000);
        assert_eq!(s.count(2_000), 2);
        assert_eq!(s.count(31_500), 1);
        assert_eq!(s.count(40_000), 0);
        for k in 0..(MAX_CLIENTS as u64 + 100) {
            s.seen(k, 50_000);
        }
        assert_eq!(s.count(50_000), MAX_CLIENTS);
        // Once they are stale, room is made for new clients.
        s.seen(u64::MAX, 90_000);
        assert_eq!(s.count(90_000), 1);
    }

    #[test]
    fn the_key_separates_addresses_and_agents() {
        let ip = "10.0.0.1".parse().ok();
        assert_ne!(client_key(ip, "a"), client_key(ip, "b"));
        assert_ne!(
            client_key(ip, "a"),
            client_key("10.0.0.2".parse().ok(), "a")
        );
        assert_eq!(client_key(ip, "a"), client_key(ip, "a"));
    }
}
