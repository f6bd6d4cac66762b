//! The admin API's limit on failed logins: [`MAX_FAILURES`] per client within a sliding
//! [`WINDOW`], in a table of at most [`MAX_TRACKED`] clients.
//!
//! A client is an IPv4 address or an IPv6 /64 ([`client_key`]). When the table is full,
//! room is made without forgetting anyone who still counts, if that can be helped: first
//! the clients whose failures have all aged out, and only then, if it is still full, the
//! clients with the fewest recent failures (oldest first), never the whole table.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts allowed per client within [`WINDOW`] before answering 429.
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most clients tracked at once. Each holds at most [`MAX_FAILURES`] instants, so the table
/// stays around a megabyte however many addresses an attacker has.
pub const MAX_TRACKED: usize = 10_000;

/// Who failures are counted for. An IPv4 address is one client. An IPv6 address counts by
/// its /64, the smallest block a site or subscriber is normally given (RFC 6177), so one who
/// holds a /64 cannot buy more guesses by rotating through its 2^64 addresses. An
/// IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) is its IPv4
/// address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        v4 => v4,
    }
}

type Table = HashMap<IpAddr, VecDeque<Instant>>;

/// Failed authentication attempts per client, over a sliding window.
#[derive(Debug)]
pub struct Limiter {
    failures: Mutex<Table>,
    capacity: usize,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::with_capacity(MAX_TRACKED)
    }
}

impl Limiter {
    /// A limiter tracking at most `capacity` clients (at least one).
    pub fn with_capacity(capacity: usize) -> Limiter {
        Limiter {
            failures: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Each update leaves the map consistent, so a poisoned lock is still usable.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt by `ip` as failed before its credentials are checked, unless its
    /// client has used up its failures for now (`None`). Counting first means concurrent
    /// attempts cannot all pass the check before the first of them fails; a success is
    /// forgotten again with [`Limiter::succeeded`].
    pub fn attempt(&self, ip: IpAddr) -> Option<Instant> {
        self.attempt_at(ip, Instant::now())
    }

    /// [`Limiter::attempt`] at `now`.
    fn attempt_at(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let key = client_key(ip);
        let mut map = self.lock();
        if let Some(q) = map.get_mut(&key) {
            while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                q.pop_front();
            }
            if q.len() >= MAX_FAILURES {
                return None;
            }
            q.push_back(now);
        } else {
            if map.len() >= self.capacity {
                make_room(&mut map, self.capacity, now);
            }
            map.insert(key, VecDeque::from([now]));
        }
        Some(now)
    }

    /// Has `ip`'s client used up its failures for now? Counts nothing: for logins that must
    /// not count until they have failed, because many of them come at once from one place
    /// (a pool opening its connections). Their concurrent guesses are bounded elsewhere
    /// (the PostgreSQL listener's cap on connections logging in per client).
    pub fn blocked(&self, ip: IpAddr) -> bool {
        self.blocked_at(ip, Instant::now())
    }

    fn blocked_at(&self, ip: IpAddr, now: Instant) -> bool {
        self.lock().get(&client_key(ip)).is_some_and(|q| {
            q.iter()
                .filter(|t| now.duration_since(**t) < WINDOW)
                .count()
                >= MAX_FAILURES
        })
    }

    /// Counts a failed attempt by `ip` (beyond its client's limit there is nothing more to
    /// count).
    pub fn failed(&self, ip: IpAddr) {
        let _ = self.attempt(ip);
    }

    /// The attempt `ip` made at `at` did not fail: it no longer counts.
    pub fn succeeded(&self, ip: IpAddr, at: Instant) {
        let key = client_key(ip);
        let mut map = self.lock();
        if let Some(q) = map.get_mut(&key) {
            if let Some(i) = q.iter().rposition(|t| *t == at) {
                q.remove(i);
            }
            if q.is_empty() {
                map.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// Makes room in a full table for one more client.
///
/// First every client whose failures have all aged out goes: it would be let in anyway.
/// If the table is still full, every recent failure still counts for someone, so some must
/// be forgotten: the clients with the fewest failures go first (forgetting one failure gives
/// a guesser less than lifting a block), the oldest of them first, until an eighth of the
/// table is free. Freeing an eighth at once means a flood of new addresses costs a scan of
/// the table per thousand or so attempts, not one per attempt.
fn make_room(map: &mut Table, capacity: usize, now: Instant) {
    map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
    if map.len() < capacity {
        return;
    }
    let keep = capacity - (capacity / 8).max(1);
    let excess = map.len() - keep;
    let mut order: Vec<(usize, Instant, IpAddr)> = map
        .iter()
        .filter_map(|(k, q)| Some((q.len(), *q.back()?, *k)))
        .collect();
    if excess < order.len() {
        order.select_nth_unstable(excess);
    }
    for (_, _, key) in order.iter().take(excess) {
        map.remove(key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Uses up `ip`'s failures at `at`.
    fn block(l: &Limiter, ip: IpAddr, at: Instant) {
        for _ in 0..MAX_FAILURES {
            assert!(l.attempt_at(ip, at).is_some(), "{ip}");
        }
        assert!(l.attempt_at(ip, at).is_none(), "{ip}");
    }

    /// Asking counts nothing; only failures block, and they age out.
    #[test]
    fn blocked_counts_only_failures() {
        let l = Limiter::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 * MAX_FAILURES {
            assert!(!l.blocked(a));
        }
        for _ in 0..MAX_FAILURES {
            l.failed(a);
        }
        assert!(l.blocked(a));
        assert!(!l.blocked("127.0.0.3".parse().unwrap()));
        assert!(!l.blocked_at(a, Instant::now() + WINDOW));
    }

    #[test]
    fn five_failures_block_an_address_and_not_others() {
        let l = Limiter::default();
        let a = ip("127.0.0.2");
        let b = ip("127.0.0.3");
        for _ in 0..MAX_FAILURES {
            assert!(l.attempt(a).is_some());
        }
        assert!(l.attempt(a).is_none());
        assert!(l.attempt(b).is_some());
    }

    #[test]
    fn successes_do_not_count() {
        let l = Limiter::default();
        let a = ip("127.0.0.2");
        for _ in 0..3 * MAX_FAILURES {
            let at = l.attempt(a).unwrap();
            l.succeeded(a, at);
        }
        assert!(l.attempt(a).is_some());
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let l = Limiter::default();
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        block(&l, a, t0);
        assert!(
            l.attempt_at(a, t0 + WINDOW - Duration::from_millis(1))
                .is_none()
        );
        assert!(l.attempt_at(a, t0 + WINDOW).is_some());
    }

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_slash_64s() {
        // (address, the client it counts as)
        let cases = [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
            ("::1", "::"),
            ("fe80::1", "fe80::"),
        ];
        for (addr, client) in cases {
            assert_eq!(client_key(ip(addr)), ip(client), "{addr}");
        }
    }

    #[test]
    fn rotating_addresses_within_a_slash_64_does_not_buy_guesses() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for i in 1..=MAX_FAILURES {
            let a = ip(&format!("2001:db8:0:1:{i:x}::{i:x}"));
            assert!(l.attempt_at(a, t0).is_some(), "{a}");
        }
        assert!(l.attempt_at(ip("2001:db8:0:1:dead:beef::1"), t0).is_none());
        // A neighbouring /64 is someone else.
        assert!(l.attempt_at(ip("2001:db8:0:2::1"), t0).is_some());
        // A success is forgotten for the /64, whichever address of it made it.
        let l = Limiter::default();
        let at = l.attempt_at(ip("2001:db8::1"), t0).unwrap();
        l.succeeded(ip("2001:db8::2"), at);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn an_ipv4_mapped_address_shares_its_ipv4_count() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(l.attempt_at(ip("::ffff:192.0.2.7"), t0).is_some());
        }
        assert!(l.attempt_at(ip("192.0.2.7"), t0).is_none());
    }

    /// The old limiter cleared the whole table once it passed 10,000 addresses, so anyone
    /// able to fail from enough addresses lifted every block, their own included.
    #[test]
    fn a_full_table_forgets_aged_out_clients_first() {
        let cap = 16;
        let l = Limiter::with_capacity(cap);
        let t0 = Instant::now();
        for i in 0..cap - 1 {
            assert!(l.attempt_at(ip(&format!("10.0.0.{i}")), t0).is_some());
        }
        // Blocked half a window later, so still blocked when the others have aged out.
        let blocked = ip("192.0.2.1");
        block(&l, blocked, t0 + WINDOW / 2);
        assert_eq!(l.tracked(), cap);
        let later = t0 + WINDOW;
        assert!(l.attempt_at(ip("10.1.0.1"), later).is_some());
        // Only the aged-out went: the blocked client and the newcomer are left.
        assert_eq!(l.tracked(), 2);
        assert!(l.attempt_at(blocked, later).is_none());
    }

    #[test]
    fn a_full_table_of_recent_failures_forgets_the_fewest_oldest_not_everyone() {
        let cap = 16;
        let l = Limiter::with_capacity(cap);
        let t0 = Instant::now();
        let blocked = ip("192.0.2.1");
        block(&l, blocked, t0);
        // Then others fail, one later than the other, some of them twice.
        for i in 1..cap {
            let at = t0 + Duration::from_secs(i as u64);
            let a = ip(&format!("10.0.0.{i}"));
            assert!(l.attempt_at(a, at).is_some());
            if i % 2 == 0 {
                assert!(l.attempt_at(a, at).is_some());
            }
        }
        assert_eq!(l.tracked(), cap);
        let now = t0 + Duration::from_secs(cap as u64);
        assert!(l.attempt_at(ip("10.1.0.1"), now).is_some());
        // An eighth was freed (two), then the newcomer came in: the two oldest of those
        // with one failure went, 10.0.0.1 and 10.0.0.3.
        assert_eq!(l.tracked(), cap - 1);
        let map = l.lock();
        for gone in ["10.0.0.1", "10.0.0.3"] {
            assert!(!map.contains_key(&ip(gone)), "{gone}");
        }
        for kept in ["10.0.0.2", "10.0.0.5", "10.0.0.15", "10.1.0.1"] {
            assert!(map.contains_key(&ip(kept)), "{kept}");
        }
        drop(map);
        // The blocked client, the oldest of all, stays blocked.
        assert!(l.attempt_at(blocked, now).is_none());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let cap = 64;
        let l = Limiter::with_capacity(cap);
        let t0 = Instant::now();
        let blocked = ip("192.0.2.1");
        block(&l, blocked, t0);
        for i in 0..20 * cap as u32 {
            let at = t0 + Duration::from_millis(u64::from(i));
            // Fresh IPv4 addresses and fresh /64s alike.
            let a = if i % 2 == 0 {
                IpAddr::from((0x0a00_0000 + i).to_be_bytes())
            } else {
                IpAddr::V6(Ipv6Addr::from_bits(u128::from(i) << 64))
            };
            for _ in 0..(i % 3) + 1 {
                assert!(l.attempt_at(a, at).is_some(), "{a}");
            }
            assert!(l.tracked() <= cap, "{} clients after {i}", l.tracked());
        }
        assert!(l.lock().values().all(|q| q.len() <= MAX_FAILURES));
        // A flood of clients failing less often than it did does not lift its block.
        assert!(l.attempt_at(blocked, t0 + Duration::from_secs(2)).is_none());
    }
}
