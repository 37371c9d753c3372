//! Channel names, allow-list patterns and the bits of the upgrade query the gateway reads.

use std::collections::HashSet;

/// Topics with this prefix carry one user's messages; clients cannot join them by name.
pub const USER_PREFIX: &str = "user:";

/// The longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 200;

/// The engine topic of a user's own channel. Every `sub` gets one, whatever it holds: bytes
/// outside the channel-name set, and `%` itself, are percent-encoded (`auth0|abc` becomes
/// `user:auth0%7Cabc`; `alice` stays `user:alice`), so two subjects never share a topic. A
/// subject whose encoding would make the name longer than [`MAX_CHANNEL_LEN`] becomes `%h` and
/// its SHA-256 in hex, which the encoding cannot produce (it puts two hex digits after a `%`).
pub fn user_topic(sub: &str) -> String {
    use std::fmt::Write;
    let mut topic = String::with_capacity(USER_PREFIX.len() + sub.len());
    topic.push_str(USER_PREFIX);
    for &b in sub.as_bytes() {
        if is_name_byte(b) {
            topic.push(char::from(b));
        } else {
            let _ = write!(topic, "%{b:02X}");
        }
        if topic.len() > MAX_CHANNEL_LEN {
            break;
        }
    }
    if topic.len() > MAX_CHANNEL_LEN {
        use sha2::{Digest, Sha256};
        topic.truncate(USER_PREFIX.len());
        topic.push_str("%h");
        for b in Sha256::digest(sub.as_bytes()) {
            let _ = write!(topic, "{b:02x}");
        }
    }
    topic
}

/// The bytes a channel name is made of.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-_:@/".contains(&b)
}

/// Why a channel name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty, too long or with a character outside `A-Z a-z 0-9 . _ - : @ /`.
    Invalid,
    /// Starts with `user:` (only the gateway subscribes those).
    Reserved,
}

impl NameError {
    /// Text for replies and rejections.
    pub fn reason(self) -> &'static str {
        match self {
            NameError::Invalid => "invalid channel name",
            NameError::Reserved => "channel is reserved",
        }
    }
}

/// Checks a name a client asked for.
pub fn check_client_channel(name: &str) -> Result<(), NameError> {
    check_name(name)?;
    if name.starts_with(USER_PREFIX) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Checks a name the admin API publishes to (any valid name, `user:` included; user topics
/// may also hold the `%` of [`user_topic`]'s escapes).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let user = name.starts_with(USER_PREFIX);
    let ok_char = |b: u8| is_name_byte(b) || (user && b == b'%');
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN || !name.bytes().all(ok_char) {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// An allow-list entry from a token: an exact name, or a prefix ending in `*` (`news.*`
/// matches `news.eu` and `news.eu.sport`; `*` alone matches everything).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    prefix: bool,
}

impl Pattern {
    /// Parses one entry.
    pub fn new(text: &str) -> Pattern {
        match text.strip_suffix('*') {
            Some(prefix) => Pattern { text: prefix.to_owned(), prefix: true },
            None => Pattern { text: text.to_owned(), prefix: false },
        }
    }

    /// Whether `channel` is allowed by this entry.
    pub fn matches(&self, channel: &str) -> bool {
        if self.prefix {
            self.text.is_empty() || (channel.len() > self.text.len() && channel.starts_with(&self.text))
        } else {
            channel == self.text
        }
    }
}

/// Whether an allow-list (`None`: everything) lets a client join `channel`.
pub fn allowed(list: Option<&[Pattern]>, channel: &str) -> bool {
    list.is_none_or(|list| list.iter().any(|p| p.matches(channel)))
}

/// The value of `key` in a query string, percent-decoded (`+` is a space, as forms send it).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k).as_deref() == Some(key)).then(|| percent_decode(v)).flatten()
    })
}

/// A `?channels=` list naming more distinct channels than a connection may join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyChannels;

/// `?channels=a,b`, in order, without repeats (repeated `channels=` parameters are not merged:
/// the first one wins). The list is refused as soon as a name beyond the first `max` distinct
/// ones turns up, so the work is linear in the length of the query whatever it holds.
pub fn query_channels(query: &str, max: usize) -> Result<Vec<String>, TooManyChannels> {
    let value = query_param(query, "channels").unwrap_or_default();
    let mut seen = HashSet::new();
    let mut channels = Vec::new();
    for channel in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if seen.insert(channel) {
            if channels.len() == max {
                return Err(TooManyChannels);
            }
            channels.push(channel.to_owned());
        }
    }
    Ok(channels)
}

/// Percent-decodes a query component or path segment (`+` is a space). `None` when a `%` is
/// not followed by two hex digits or the result is not UTF-8. Never panics.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly: from_str_radix alone would take "%+1" as 0x01.
                let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                out.push(hex_value(hex[0]) << 4 | hex_value(hex[1]));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The value of one hex digit (already checked; anything else counts as 0).
fn hex_value(digit: u8) -> u8 {
    char::from(digit).to_digit(16).map_or(0, |d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::new("news.*");
        assert!(p.matches("news.eu") && p.matches("news.eu.sport"));
        assert!(!p.matches("news.") && !p.matches("news") && !p.matches("sports"));
        assert!(Pattern::new("*").matches("anything"));
        assert!(Pattern::new("chat").matches("chat") && !Pattern::new("chat").matches("chat2"));
        assert!(allowed(None, "x"));
        assert!(!allowed(Some(&[]), "x"));
    }

    #[test]
    fn names() {
        assert_eq!(check_client_channel("news.eu-1"), Ok(()));
        assert_eq!(check_client_channel("user:bob"), Err(NameError::Reserved));
        assert_eq!(check_client_channel("a b"), Err(NameError::Invalid));
        assert_eq!(check_client_channel(""), Err(NameError::Invalid));
        assert_eq!(check_name("user:bob"), Ok(()));
    }

    #[test]
    fn user_topics_take_any_subject() {
        assert_eq!(user_topic("alice"), "user:alice");
        assert_eq!(user_topic("a.b@example.com"), "user:a.b@example.com");
        assert_eq!(user_topic("auth0|abc"), "user:auth0%7Cabc");
        // `%` is escaped too, so a subject that looks like an escape cannot take another's topic.
        assert_eq!(user_topic("auth0%7Cabc"), "user:auth0%257Cabc");
        assert_eq!(user_topic("é "), "user:%C3%A9%20");
        for sub in
            ["auth0|abc", "é ", "x%y", "a\u{0}b", &"z".repeat(195), &"|".repeat(500), &"q".repeat(5000)]
        {
            let topic = user_topic(sub);
            assert_eq!(check_name(&topic), Ok(()), "{sub:?} -> {topic:?}");
            assert_eq!(check_client_channel(&topic), Err(NameError::Reserved));
        }
        assert_eq!(user_topic(&"z".repeat(195)).len(), MAX_CHANNEL_LEN);
        let long = user_topic(&"|".repeat(500));
        assert!(long.starts_with("user:%h") && long.len() == USER_PREFIX.len() + 2 + 64, "{long}");
        assert_ne!(long, user_topic(&"|".repeat(501)));
        // Outside user topics `%` is still not a name character.
        assert_eq!(check_name("news%20"), Err(NameError::Invalid));
    }

    #[test]
    fn query() {
        assert_eq!(query_channels("token=x&channels=a%2Cb,%20c,a", 3).unwrap(), ["a", "b", "c"]);
        assert_eq!(query_channels("channels=a,b,c,a", 2), Err(TooManyChannels));
        assert_eq!(query_param("a=1&token=abc.def", "token").as_deref(), Some("abc.def"));
        assert_eq!(query_param("token=%zz", "token"), None);
        assert_eq!(percent_decode("a%2Cb%2c+c").as_deref(), Some("a,b, c"));
        for bad in ["%+1", "%-1", "% 1", "%1", "%", "%é", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
        assert!(query_channels("x=1", 0).unwrap().is_empty());
        assert_eq!(query_channels("channels=,a,,a", 1).unwrap(), ["a"]);
    }

    #[test]
    fn long_lists_collapse_and_stop_at_the_cap() {
        // 100,000 repeats of one name: one channel.
        let repeats = format!("channels={}", "news,".repeat(100_000));
        assert_eq!(query_channels(&repeats, 1).unwrap(), ["news"]);
        // Exactly the cap, then one over it.
        let names: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
        let at_cap = format!("channels={}", names.join(","));
        assert_eq!(query_channels(&at_cap, 5000).unwrap().len(), 5000);
        assert_eq!(query_channels(&at_cap, 4999), Err(TooManyChannels));
    }
}
