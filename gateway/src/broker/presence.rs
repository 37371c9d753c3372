//! Fleet-wide subscriber counts. Each channel has one Redis hash, `PREFIX:presence:NAME`, with a
//! field per node: `node id (hex) → "count:expires_ms"`. A node rewrites its fields when its
//! counts change (within [`FLUSH`]) and all of them every [`REFRESH`], each time pushing the
//! hash's own expiry out to [`TTL`]; a reader sums the fields that have not expired, so a node
//! that died stops counting after at most [`TTL`]. User topics are not recorded (one hash per
//! signed-in user would cost more than it tells).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Presence;

/// How long a node's count stands without being rewritten.
pub(super) const TTL: Duration = Duration::from_secs(30);
/// How often a node rewrites all of its counts.
pub(super) const REFRESH: Duration = Duration::from_secs(10);
/// How soon a changed count is written.
pub(super) const FLUSH: Duration = Duration::from_millis(100);

/// The field naming `node`.
pub(super) fn field(node: u64) -> String {
    format!("{node:016x}")
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Adds the commands that record `count` subscribers of this node (`field`) in `key`.
pub(super) fn write(pipe: &mut ::redis::Pipeline, key: &str, field: &str, count: usize, now_ms: u64) {
    if count == 0 {
        pipe.cmd("HDEL").arg(key).arg(field).ignore();
    } else {
        let value = format!("{count}:{}", now_ms + TTL.as_millis() as u64);
        pipe.cmd("HSET").arg(key).arg(field).arg(value).ignore();
        pipe.cmd("PEXPIRE").arg(key).arg(TTL.as_millis() as u64).ignore();
    }
}

/// Sums the other nodes' live records plus this node's `local` count (always fresher than its
/// own record). Returns the total and the fields that have expired.
pub(super) fn sum(
    fields: &[(String, String)],
    own: &str,
    now_ms: u64,
    local: usize,
) -> (Presence, Vec<String>) {
    let mut found = Presence { subscribers: local as u64, nodes: u64::from(local > 0) };
    let mut stale = Vec::new();
    for (node, value) in fields {
        if node == own {
            continue;
        }
        let parsed =
            value.split_once(':').and_then(|(n, e)| Some((n.parse::<u64>().ok()?, e.parse::<u64>().ok()?)));
        match parsed {
            Some((count, expires)) if expires > now_ms => {
                found.subscribers += count;
                found.nodes += u64::from(count > 0);
            }
            _ => stale.push(node.clone()),
        }
    }
    (found, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_live_records_and_reports_stale_ones() {
        let own = field(1);
        let fields = vec![
            (field(1), "99:5000".to_owned()), // ours: replaced by the live local count
            (field(2), "3:5000".to_owned()),
            (field(3), "4:1000".to_owned()), // expired
            (field(4), "junk".to_owned()),
            (field(5), "2:9000".to_owned()),
        ];
        let (found, stale) = sum(&fields, &own, 2000, 1);
        assert_eq!(found, Presence { subscribers: 6, nodes: 3 });
        assert_eq!(stale, [field(3), field(4)]);
        let (alone, _) = sum(&[], &own, 0, 0);
        assert_eq!(alone, Presence { subscribers: 0, nodes: 0 });
    }

    #[test]
    fn fields_are_fixed_width_hex() {
        assert_eq!(field(255), "00000000000000ff");
    }
}
