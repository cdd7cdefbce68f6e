//! Conversation ids: 20 characters, time-ordered, as the original's.

use std::time::{SystemTime, UNIX_EPOCH};

/// 64 characters in ASCII order, so that ids sort as their times do.
const ALPHABET: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// A new conversation id: 8 characters of the time in milliseconds since the Unix epoch,
/// then 12 characters from `random`, all from a 64-character alphabet in ASCII order, so
/// that ids of later calls sort after earlier ones (the original's 20-character
/// time-ordered ids). Pass a fresh random number each time (e.g. `rand::random()`).
///
/// ```
/// let id = wilddog_call::new_conversation_id(std::time::SystemTime::now(), 42);
/// assert_eq!(id.len(), 20);
/// ```
pub fn new_conversation_id(now: SystemTime, random: u64) -> String {
    let millis = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut id = String::with_capacity(20);
    for i in (0..8).rev() {
        id.push(char::from(ALPHABET[((millis >> (6 * i)) & 63) as usize]));
    }
    // 72 bits of tail from 64 bits of randomness: the last 8 bits re-use mixed-up ones.
    let mixed = random.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    let tail = (u128::from(random) << 8) | u128::from(mixed & 0xff);
    for i in (0..12).rev() {
        id.push(char::from(ALPHABET[((tail >> (6 * i)) & 63) as usize]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_twenty_url_safe_characters() {
        let id = new_conversation_id(SystemTime::now(), u64::MAX);
        assert_eq!(id.len(), 20);
        assert!(id.bytes().all(|b| ALPHABET.contains(&b)), "{id}");
    }

    #[test]
    fn ids_sort_by_time() {
        let t0 = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let a = new_conversation_id(t0, u64::MAX);
        let b = new_conversation_id(t0 + Duration::from_millis(1), 0);
        assert!(a < b, "{a} !< {b}");
    }

    #[test]
    fn ids_differ_by_random() {
        let t0 = SystemTime::now();
        assert_ne!(new_conversation_id(t0, 1), new_conversation_id(t0, 2));
        assert_eq!(new_conversation_id(t0, 7), new_conversation_id(t0, 7));
    }
}
