//! Time-ordered 64-bit ids, Snowflake-style: 41 bits of milliseconds since
//! 2026-01-01, 10 bits of node id, 12 bits of sequence within the
//! millisecond. Ids of one node strictly increase; ids of different nodes
//! never collide. Every service makes its rows' ids with one.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: u64 = 1_767_225_600_000;
const NODE_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
/// The largest node id: 1023.
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;

/// Makes ids for one node.
#[derive(Debug)]
pub struct Ids {
    node: u64,
    /// The millisecond and sequence of the last id made.
    last: Mutex<(u64, u64)>,
}

impl Ids {
    /// Ids for `node` (0..=1023; larger values are taken modulo 1024).
    #[must_use]
    pub fn new(node: u16) -> Self {
        Self {
            node: u64::from(node & MAX_NODE),
            last: Mutex::new((0, 0)),
        }
    }

    /// A node id from an instance id: a hash of it, for services whose
    /// config names none.
    #[must_use]
    pub fn node_of(instance_id: &str) -> u16 {
        // FNV-1a, folded to 10 bits.
        let hash = instance_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        u16::try_from(hash % (u64::from(MAX_NODE) + 1)).unwrap_or(0)
    }

    /// The next id: larger than every id this node made before.
    pub fn next(&self) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_ms().max(last.0);
        let (ms, sequence) = if now == last.0 {
            let sequence = last.1 + 1;
            if sequence >> SEQUENCE_BITS == 0 {
                (now, sequence)
            } else {
                // 4096 ids in this millisecond: borrow the next one. The
                // clock catches up within milliseconds.
                (now + 1, 0)
            }
        } else {
            (now, 0)
        };
        *last = (ms, sequence);
        let id = ((ms - EPOCH_MS) << (NODE_BITS + SEQUENCE_BITS))
            | (self.node << SEQUENCE_BITS)
            | sequence;
        i64::try_from(id).unwrap_or(i64::MAX)
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis())
        .unwrap_or(u64::MAX)
        .max(EPOCH_MS)
}

/// The `[teamhub]` section.
///
/// ```toml
/// [teamhub]
/// node_id = 7   # 0..=1023; unset: a hash of `app.instance_id`
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamhubConfig {
    /// The node part of the ids this process makes; processes (replicas)
    /// need different ones. Unset: a hash of the instance id.
    pub node_id: Option<u16>,
}

impl mamey_core::config::ConfigSection for TeamhubConfig {
    const KEY: &'static str = "teamhub";
}

/// Sets the process's id generator to `teamhub.node_id`, or to a hash of
/// the instance id, when the service builds. Every teamhub service has it
/// (see `Deployment::service`); in the embedded system the first service
/// sets the node for the whole process.
#[derive(Debug, Default)]
pub struct NodeId;

impl mamey_core::Plugin for NodeId {
    fn name(&self) -> &'static str {
        "node-id"
    }

    async fn init(
        &mut self,
        ctx: &mut mamey_core::InitContext<'_>,
    ) -> Result<(), mamey_core::BoxError> {
        let config = ctx.section::<TeamhubConfig>()?;
        let node = match config.node_id {
            Some(node) if node > MAX_NODE => {
                return Err(ctx
                    .config()
                    .invalid("teamhub.node_id", format!("expected 0 to {MAX_NODE}"))
                    .into());
            }
            Some(node) => node,
            None => Ids::node_of(&ctx.app().instance_id),
        };
        init(node);
        tracing::debug!(node, "ids made here use this node id");
        Ok(())
    }
}

/// The process's generator, for ids made while a request is read (a
/// command's id is in the command, so its `Location` is known before it is
/// handled). Its node is set once by [`init`] (the [`NodeId`] plug-in every
/// service has); before that it is node 0.
static PROCESS: std::sync::OnceLock<Ids> = std::sync::OnceLock::new();

/// Sets the process's node id; the first call wins (the embedded system is
/// one node).
pub fn init(node: u16) {
    let _ = PROCESS.set(Ids::new(node));
}

/// The next id of this process.
#[must_use]
pub fn next() -> i64 {
    PROCESS.get_or_init(|| Ids::new(0)).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_carry_the_node() {
        let ids = Ids::new(5);
        let made: Vec<i64> = (0..10_000).map(|_| ids.next()).collect();
        assert!(made.windows(2).all(|w| w[0] < w[1]));
        assert!(made.iter().all(|id| (id >> SEQUENCE_BITS) & 1023 == 5));
        let other = Ids::new(6).next();
        assert!(!made.contains(&other));
    }

    #[test]
    fn node_ids_fit_and_differ() {
        assert!(Ids::node_of("chat-1") <= MAX_NODE);
        assert_ne!(Ids::node_of("chat-1"), Ids::node_of("chat-2"));
    }
}
