//! Size caps for the maps keyed by what clients send (SockJS session ids, client IPs), so a
//! flood of new keys cannot grow them without bound between two periodic prunes.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Makes room in `map` for one more entry when it holds `cap`: drops the expired entries and,
/// if that freed less than a sixteenth, the least recently used ones down to fifteen
/// sixteenths of `cap`, so the scan is paid once per `cap / 16` inserts.
pub fn make_room<K: Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    expired: impl Fn(&V) -> bool,
    last_used: impl Fn(&V) -> Instant,
) {
    if map.len() < cap {
        return;
    }
    map.retain(|_, v| !expired(v));
    let keep = cap - (cap / 16).max(1);
    if map.len() <= keep {
        return;
    }
    let mut times: Vec<Instant> = map.values().map(&last_used).collect();
    let (_, &mut cutoff, _) = times.select_nth_unstable(map.len() - keep - 1);
    map.retain(|_, v| last_used(v) > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expired_entries_go_first_then_the_oldest() {
        let t = Instant::now();
        let at = |s| t + Duration::from_secs(s);
        let mut map: HashMap<u32, Instant> = (0..32).map(|i| (i, at(u64::from(i)))).collect();
        make_room(&mut map, 64, |_| true, |v| *v);
        assert_eq!(map.len(), 32, "below the cap nothing happens");
        make_room(&mut map, 32, |v| *v < at(4), |v| *v);
        assert_eq!(map.len(), 28, "four expired entries were enough");
        make_room(&mut map, 28, |_| false, |v| *v);
        assert_eq!(map.len(), 27);
        assert!(!map.contains_key(&4), "the oldest went");
    }
}
