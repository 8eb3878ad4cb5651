//! The roster: which machines a fleet is made of: many nodes from one step file (`count`, name
//! templates), inventories of machines that
//! exist (a plain list, an Ansible INI inventory), and shards that split either across several
//! nodeup processes.

pub mod inventory;

pub use inventory::{
    parse_host, HostSpec, HostSpecError, Inventory, InventoryError, InventoryHost, LimitError,
};

/// One of N deterministic parts of a fleet or an inventory: member `i` (0-based, in order)
/// belongs to part `i % N + 1`. Any job runner can run the N parts as N nodeup processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which part, 1-based.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

/// A shard that is not `K/N` with 1 ≤ K ≤ N.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: give K/N with 1 <= K <= N, e.g. 2/5")]
pub struct ShardError(pub String);

/// A node name template that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A count of zero.
    #[error("count must be 1 or more")]
    NoNodes,
    /// More nodes than one nodeup process makes.
    #[error(
        "count {0} is more than the {MAX_COUNT} nodes one nodeup makes: split the fleet into \
         shards (--shard K/N, one process each) or give a smaller count"
    )]
    TooMany(usize),
    /// A `{` without its `}`.
    #[error("name {0:?}: a {{ without its }}: write {{index}} or {{index:03}}")]
    Unclosed(String),
    /// A placeholder other than `{index}` or `{index:0N}`.
    #[error(
        "name {template:?}: unknown placeholder {{{placeholder}}}: write {{index}} or {{index:03}}"
    )]
    Unknown {
        /// The template.
        template: String,
        /// What is between the braces.
        placeholder: String,
    },
}

impl Shard {
    /// Parses `K/N` (1 ≤ K ≤ N).
    ///
    /// # Errors
    /// Anything else, with an example.
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError(text.to_string());
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether member `position` (0-based) is in this part.
    pub fn selects(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }

    /// The members of `all` in this part, in order.
    pub fn pick<T>(&self, all: Vec<T>) -> Vec<T> {
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| self.selects(*i))
            .map(|(_, t)| t)
            .collect()
    }
}

/// The most nodes one `deploy` makes: a typo's extra zeros cost money; past this, a fleet is
/// sharded over several processes (each within its provider's rate limits anyway).
pub const MAX_COUNT: usize = 10_000;

/// The names of a fleet of `count` nodes from `template`: `{index}` is replaced by the node's
/// number from 1, `{index:03}` pads it to three digits; a template without `{index}` gets `-1`,
/// `-2` ... when `count` > 1.
///
/// # Errors
/// A `{` that starts no known placeholder, or a count of zero.
pub fn node_names(template: &str, count: usize) -> Result<Vec<String>, NameError> {
    if count == 0 {
        return Err(NameError::NoNodes);
    }
    if count > MAX_COUNT {
        return Err(NameError::TooMany(count));
    }
    let has_index = template.contains('{');
    (1..=count)
        .map(|i| {
            if has_index {
                expand(template, i)
            } else if count > 1 {
                Ok(format!("{template}-{i}"))
            } else {
                Ok(template.to_string())
            }
        })
        .collect()
}

fn expand(template: &str, index: usize) -> Result<String, NameError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = (rest[open..].find('}'))
            .map(|c| open + c)
            .ok_or_else(|| NameError::Unclosed(template.into()))?;
        let width = match &rest[open + 1..close] {
            "index" => 0,
            spec => spec
                .strip_prefix("index:0")
                .and_then(|w| w.parse::<usize>().ok())
                .ok_or_else(|| NameError::Unknown {
                    template: template.into(),
                    placeholder: spec.into(),
                })?,
        };
        out.push_str(&format!("{index:0width$}"));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_templates() {
        assert_eq!(
            node_names("web-{index}", 3).unwrap(),
            ["web-1", "web-2", "web-3"]
        );
        assert_eq!(
            node_names("w{index:03}.lab", 2).unwrap(),
            ["w001.lab", "w002.lab"]
        );
        assert_eq!(node_names("web", 2).unwrap(), ["web-1", "web-2"]);
        assert_eq!(node_names("web", 1).unwrap(), ["web"]);
        assert!(node_names("web-{i}", 2)
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder {i}"));
        assert!(node_names("web-{index", 2).is_err());
        assert!(node_names("web", 0).is_err());
        let e = node_names("web-{index}", 100_000).unwrap_err().to_string();
        assert!(e.contains("count 100000 is more than the 10000"), "{e}");
    }

    #[test]
    fn shards_cover_everything_once() {
        let all: Vec<usize> = (0..10).collect();
        let mut seen: Vec<usize> = (1..=3)
            .flat_map(|k| Shard { index: k, count: 3 }.pick(all.clone()))
            .collect();
        seen.sort();
        assert_eq!(seen, all);
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
