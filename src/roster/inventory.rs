//! Inventories of machines that exist: a plain list (`[user@]host[:port]` a line, `#` comments)
//! or an Ansible INI inventory (groups, `[group:vars]`, `[group:children]`, host ranges such as
//! `web[01:20]`, and the connection variables `ansible_host`, `ansible_user`, `ansible_port`,
//! `ansible_ssh_private_key_file`), so that Ansible users point nodeup at what they have.
//! `--limit` selects by group, host name or glob, as Ansible's does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A `[user@]address[:port]` as written on the command line or in a plain list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The user, when given.
    pub user: Option<String>,
    /// The address or name.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

/// A host that is not `[user@]address[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostSpecError {
    /// `@host`.
    #[error("{0:?}: the user before @ is empty")]
    EmptyUser(String),
    /// `[v6address` with no `]`.
    #[error("{0:?}: a [ without its ]")]
    Unclosed(String),
    /// Something after `]` that is not `:port`.
    #[error("{text:?}: unexpected {after:?} after ]")]
    AfterBracket {
        /// The host as written.
        text: String,
        /// What follows the `]`.
        after: String,
    },
    /// No address at all.
    #[error("{0:?}: no address")]
    NoAddress(String),
    /// The port is not one.
    #[error("{text:?}: {port:?} is not a port (1 to 65535)")]
    BadPort {
        /// The host as written.
        text: String,
        /// The port as written.
        port: String,
    },
}

/// Parses `[user@]address[:port]`, with `[v6address]:port`.
///
/// # Errors
/// An empty user or address, a bad port, an unclosed bracket.
pub fn parse_host(text: &str) -> Result<HostSpec, HostSpecError> {
    let (user, rest) = match text.rsplit_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user.to_string()), rest),
        Some(_) => return Err(HostSpecError::EmptyUser(text.into())),
        None => (None, text),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| HostSpecError::Unclosed(text.into()))?;
        match after.strip_prefix(':') {
            Some(p) => (host.to_string(), Some(p)),
            None if after.is_empty() => (host.to_string(), None),
            None => {
                return Err(HostSpecError::AfterBracket {
                    text: text.into(),
                    after: after.into(),
                })
            }
        }
    } else if rest.matches(':').count() > 1 {
        // A bare IPv6 address.
        (rest.to_string(), None)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(HostSpecError::NoAddress(text.into()));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| HostSpecError::BadPort {
                    text: text.into(),
                    port: p.into(),
                })
        })
        .transpose()?;
    Ok(HostSpec { user, host, port })
}

/// One machine of an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryHost {
    /// Its name in the inventory (what `--limit` and the output show).
    pub name: String,
    /// Where to connect (`ansible_host`, else the name).
    pub address: String,
    /// The port (`ansible_port`).
    pub port: Option<u16>,
    /// The user (`ansible_user`).
    pub user: Option<String>,
    /// A private key file (`ansible_ssh_private_key_file`).
    pub key_file: Option<PathBuf>,
    /// The groups it is in, directly or through `:children`.
    pub groups: BTreeSet<String>,
}

/// A bad inventory: the file, the line, what is wrong and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", where_in(path, *line))]
pub struct InventoryError {
    /// The file.
    pub path: String,
    /// The line (1-based; 0 for the file as a whole).
    pub line: usize,
    /// What is wrong, and the fix.
    pub message: String,
}

/// `path:line`, or the path alone for the file as a whole (line 0).
fn where_in(path: &str, line: usize) -> String {
    if line == 0 {
        format!("inventory {path}")
    } else {
        format!("{path}:{line}")
    }
}

/// A `--limit` pattern that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Nothing to select by: an empty pattern, an empty item (`a,,b`), or `!` or `&` alone.
    #[error("--limit {pattern:?}: {why}; write groups, host names or globs separated by , or : (`web:!web3`)")]
    Empty {
        /// The pattern.
        pattern: String,
        /// What is empty.
        why: &'static str,
    },
    /// An item is neither a group, a host, nor a valid glob.
    #[error("--limit {item:?}: not a group, host or glob")]
    BadGlob {
        /// The item.
        item: String,
        /// Why it is no glob.
        #[source]
        source: glob::PatternError,
    },
}

/// An inventory: its hosts in file order (each once), and its groups.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The hosts, in the order they first appear.
    pub hosts: Vec<InventoryHost>,
    /// Each group's direct hosts and child groups.
    groups: BTreeMap<String, Group>,
}

#[derive(Debug, Clone, Default)]
struct Group {
    hosts: Vec<String>,
    children: Vec<String>,
    vars: Vec<Var>,
}

/// A variable as written: its name, its value, and the line it is on.
type Var = (String, String, usize);

/// The connection variables nodeup reads; other `ansible_` variables are for Ansible's modules.
const HOST_VARS: [&str; 7] = [
    "ansible_host",
    "ansible_ssh_host",
    "ansible_user",
    "ansible_ssh_user",
    "ansible_port",
    "ansible_ssh_port",
    "ansible_ssh_private_key_file",
];

/// The most hosts an inventory may hold (ranges expanded): far beyond what one controller runs
/// (shard beyond a few thousand), and a bound on a range typed with a digit too many.
pub const MAX_HOSTS: usize = 1_000_000;

fn too_many(path: &str, line: usize) -> InventoryError {
    InventoryError {
        path: path.into(),
        line,
        message: format!(
            "more than {MAX_HOSTS} hosts: split the inventory (or run shards of it with --shard)"
        ),
    }
}

/// Whether the text is a YAML inventory (`all:` / `hosts:` keys), which nodeup does not read.
fn looks_like_yaml(text: &str) -> bool {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    first.is_some_and(|l| l == "---" || (l.ends_with(':') && !l.contains(['[', ' '])))
}

/// Whether a line names a host range (`web[01:20]`), which only the INI format has.
fn has_range(line: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    line.split_once('[').is_some_and(|(head, rest)| {
        let inside = rest.split_once(']').map_or("", |(inside, _)| inside);
        !head.is_empty()
            && inside
                .split_once(':')
                .is_some_and(|(a, b)| digits(a) && digits(b))
    })
}

impl Inventory {
    /// Reads an inventory file: Ansible INI when it has a `[section]` or a `key=value`, else a
    /// plain list. Relative key files are taken relative to the file's directory.
    ///
    /// # Errors
    /// The file cannot be read, or a line is wrong (named with its number).
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = crate::files::read_to_string(path).map_err(|e| InventoryError {
            path: path.display().to_string(),
            line: 0,
            message: format!("cannot be read: {}", crate::error_chain(&e)),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Inventory::parse(&text, &path.display().to_string(), base)
    }

    /// Parses inventory text (see [`Inventory::load`]); `path` names it in errors.
    ///
    /// # Errors
    /// A line that is wrong, named with its number.
    pub fn parse(text: &str, path: &str, base: &Path) -> Result<Inventory, InventoryError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if looks_like_yaml(text) {
            return Err(InventoryError {
                path: path.into(),
                line: 1,
                message: "this looks like a YAML inventory, which nodeup does not read: write it \
                          in Ansible's INI format (groups in [brackets], one host a line) or as a \
                          plain list"
                    .into(),
            });
        }
        let ini = text.lines().map(str::trim).any(|l| {
            !l.starts_with('#')
                && !l.starts_with(';')
                && (is_section(l) || l.contains('=') || has_range(l))
        });
        if ini {
            Parser::new(path, base).ini(text)
        } else {
            plain(text, path)
        }
    }

    /// The hosts `pattern` selects, in inventory order: items separated by `,` or `:`; each a
    /// group, a host name, or a glob on host names (`web*`); `!item` excludes, `&item` keeps only
    /// what it also selects. `all` is every host.
    ///
    /// # Errors
    /// An item that selects nothing and is no valid glob.
    pub fn limit(&self, pattern: &str) -> Result<Vec<InventoryHost>, LimitError> {
        let empty = |why| LimitError::Empty {
            pattern: pattern.into(),
            why,
        };
        if pattern.trim().is_empty() {
            return Err(empty("the pattern is empty"));
        }
        let mut chosen: Option<BTreeSet<String>> = None;
        let (mut excluded, mut required) = (Vec::new(), Vec::new());
        for item in pattern.split([',', ':']).map(str::trim) {
            match item {
                "" => return Err(empty("an item between separators is empty")),
                "!" | "&" => return Err(empty("a ! or & has nothing after it")),
                _ => {}
            }
            if let Some(rest) = item.strip_prefix('!') {
                excluded.push(self.select(rest)?);
            } else if let Some(rest) = item.strip_prefix('&') {
                required.push(self.select(rest)?);
            } else {
                chosen
                    .get_or_insert_with(BTreeSet::new)
                    .extend(self.select(item)?);
            }
        }
        let chosen = chosen.unwrap_or_else(|| self.select("all").unwrap_or_default());
        Ok(self
            .hosts
            .iter()
            .filter(|h| chosen.contains(&h.name))
            .filter(|h| excluded.iter().all(|x| !x.contains(&h.name)))
            .filter(|h| required.iter().all(|r| r.contains(&h.name)))
            .cloned()
            .collect())
    }

    fn select(&self, item: &str) -> Result<BTreeSet<String>, LimitError> {
        if item == "all" || item == "*" {
            return Ok(self.hosts.iter().map(|h| h.name.clone()).collect());
        }
        if self.groups.contains_key(item) {
            return Ok(self
                .hosts
                .iter()
                .filter(|h| h.groups.contains(item))
                .map(|h| h.name.clone())
                .collect());
        }
        let glob = glob::Pattern::new(item).map_err(|source| LimitError::BadGlob {
            item: item.into(),
            source,
        })?;
        Ok(self
            .hosts
            .iter()
            .filter(|h| glob.matches(&h.name))
            .map(|h| h.name.clone())
            .collect())
    }
}

/// A plain list: `[user@]host[:port]` a line, `#` comments, blank lines.
fn plain(text: &str, path: &str) -> Result<Inventory, InventoryError> {
    let mut inventory = Inventory::default();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let spec = parse_host(line).map_err(|e| InventoryError {
            path: path.into(),
            line: n + 1,
            message: format!("{e}: write [user@]host[:port]"),
        })?;
        if !seen.insert(line.to_string()) {
            continue;
        }
        if inventory.hosts.len() >= MAX_HOSTS {
            return Err(too_many(path, n + 1));
        }
        inventory.hosts.push(InventoryHost {
            name: line.to_string(),
            address: spec.host,
            port: spec.port,
            user: spec.user,
            key_file: None,
            groups: BTreeSet::new(),
        });
    }
    Ok(inventory)
}

/// Where an INI line goes.
enum Section {
    Hosts(String),
    Vars(String),
    Children(String),
}

struct Parser<'a> {
    path: &'a str,
    base: &'a Path,
    inventory: Inventory,
    host_vars: BTreeMap<String, Vec<Var>>,
    /// The groups each host is in directly.
    direct: HashMap<String, BTreeSet<String>>,
    /// Host names in the order first seen.
    seen: Vec<String>,
}

impl<'a> Parser<'a> {
    fn new(path: &'a str, base: &'a Path) -> Self {
        Parser {
            path,
            base,
            inventory: Inventory::default(),
            host_vars: BTreeMap::new(),
            direct: HashMap::new(),
            seen: Vec::new(),
        }
    }

    fn error(&self, line: usize, message: String) -> InventoryError {
        InventoryError {
            path: self.path.into(),
            line,
            message,
        }
    }

    fn ini(mut self, text: &str) -> Result<Inventory, InventoryError> {
        let mut section = Section::Hosts("ungrouped".into());
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = match header.split_once(':') {
                    None => Section::Hosts(header.into()),
                    Some((group, "vars")) => Section::Vars(group.into()),
                    Some((group, "children")) => Section::Children(group.into()),
                    Some((_, other)) => {
                        return Err(self.error(
                            n + 1,
                            format!("unknown section kind :{other}: write [group], [group:vars] or [group:children]"),
                        ))
                    }
                };
                self.inventory
                    .groups
                    .entry(group_of(&section).into())
                    .or_default();
                continue;
            }
            self.line(&section, line, n + 1)?;
        }
        self.finish()
    }

    fn line(&mut self, section: &Section, line: &str, n: usize) -> Result<(), InventoryError> {
        let words = shlex::split(line).ok_or_else(|| self.error(n, "unbalanced quotes".into()))?;
        let group = group_of(section).to_string();
        match section {
            Section::Hosts(_) => {
                let vars = pairs(&words[1..], n).map_err(|m| self.error(n, m))?;
                let room = MAX_HOSTS - self.seen.len();
                for name in expand_range(&words[0], room).map_err(|m| self.error(n, m))? {
                    let entry = self.inventory.groups.entry(group.clone()).or_default();
                    entry.hosts.push(name.clone());
                    self.direct
                        .entry(name.clone())
                        .or_default()
                        .insert(group.clone());
                    if !self.host_vars.contains_key(&name) {
                        if self.seen.len() >= MAX_HOSTS {
                            return Err(too_many(self.path, n));
                        }
                        self.seen.push(name.clone());
                    }
                    self.host_vars.entry(name).or_default().extend(vars.clone());
                }
            }
            Section::Vars(_) => {
                let vars = pairs(&words, n).map_err(|m| self.error(n, m))?;
                let entry = self.inventory.groups.entry(group).or_default();
                entry.vars.extend(vars);
            }
            Section::Children(_) => {
                let entry = self.inventory.groups.entry(group).or_default();
                entry.children.push(words[0].clone());
            }
        }
        Ok(())
    }

    /// Each host once, in the order first seen, with its groups and variables resolved.
    fn finish(mut self) -> Result<Inventory, InventoryError> {
        let ancestors = self.ancestors();
        let mut hosts = Vec::with_capacity(self.seen.len());
        for name in std::mem::take(&mut self.seen) {
            let mut groups = self.direct.remove(&name).unwrap_or_default();
            let inherited: Vec<String> = groups
                .iter()
                .flat_map(|g| ancestors.get(g).into_iter().flatten().cloned())
                .collect();
            groups.extend(inherited);
            let mut vars: BTreeMap<String, (String, usize)> = BTreeMap::new();
            for group in std::iter::once("all").chain(groups.iter().map(String::as_str)) {
                if let Some(g) = self.inventory.groups.get(group) {
                    vars.extend(g.vars.iter().map(|(k, v, n)| (k.clone(), (v.clone(), *n))));
                }
            }
            let own = self.host_vars.remove(&name).unwrap_or_default();
            vars.extend(own.into_iter().map(|(k, v, n)| (k, (v, n))));
            hosts.push(self.host(name, groups, &vars)?);
        }
        self.inventory.hosts = hosts;
        Ok(self.inventory)
    }

    /// Each group's ancestors: the groups whose `:children` hold it, and theirs, in one pass
    /// over the groups (not one per host).
    fn ancestors(&self) -> HashMap<String, BTreeSet<String>> {
        let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
        for (name, group) in &self.inventory.groups {
            for child in &group.children {
                parents
                    .entry(child.as_str())
                    .or_default()
                    .push(name.as_str());
            }
        }
        let mut all = HashMap::new();
        for name in self.inventory.groups.keys() {
            let mut found = BTreeSet::new();
            let mut todo: Vec<&str> = parents.get(name.as_str()).cloned().unwrap_or_default();
            while let Some(parent) = todo.pop() {
                if found.insert(parent.to_string()) {
                    todo.extend(parents.get(parent).into_iter().flatten());
                }
            }
            all.insert(name.clone(), found);
        }
        all
    }

    fn host(
        &self,
        name: String,
        groups: BTreeSet<String>,
        vars: &BTreeMap<String, (String, usize)>,
    ) -> Result<InventoryHost, InventoryError> {
        let var = |keys: [&str; 2]| keys.iter().find_map(|k| vars.get(*k).cloned());
        let port = var(["ansible_port", "ansible_ssh_port"])
            .map(|(p, line)| {
                p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    self.error(
                        line,
                        format!("host {name}: ansible_port {p:?} is not a port (1 to 65535)"),
                    )
                })
            })
            .transpose()?;
        for key in vars.keys() {
            if key.starts_with("ansible_") && !HOST_VARS.contains(&key.as_str()) {
                tracing::debug!("inventory {}: {key} is not used by nodeup", self.path);
            }
        }
        Ok(InventoryHost {
            address: var(["ansible_host", "ansible_ssh_host"])
                .map(|(v, _)| v)
                .unwrap_or_else(|| name.clone()),
            port,
            user: var(["ansible_user", "ansible_ssh_user"]).map(|(v, _)| v),
            key_file: vars
                .get("ansible_ssh_private_key_file")
                .map(|(k, _)| crate::deploy::stepfile::resolve_path(self.base, k)),
            groups,
            name,
        })
    }
}

/// Whether a line is an INI section header (`[web]`, `[web:vars]`), not a bracketed IPv6 address.
fn is_section(line: &str) -> bool {
    let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
        return false;
    };
    let name = inner.split_once(':').map_or(inner, |(name, _)| name);
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn group_of(section: &Section) -> &str {
    match section {
        Section::Hosts(g) | Section::Vars(g) | Section::Children(g) => g,
    }
}

/// `key=value` words of line `n`.
fn pairs(words: &[String], n: usize) -> Result<Vec<Var>, String> {
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string(), n))
                .ok_or_else(|| format!("{w:?} is not key=value"))
        })
        .collect()
}

/// `web[01:03].lab` → web01.lab, web02.lab, web03.lab (numeric ranges; the width of the first
/// bound is kept); at most `room` names.
fn expand_range(name: &str, room: usize) -> Result<Vec<String>, String> {
    let Some(open) = name.find('[') else {
        return Ok(vec![name.to_string()]);
    };
    let close = name[open..]
        .find(']')
        .map(|c| open + c)
        .ok_or_else(|| format!("{name:?}: a [ without its ]"))?;
    let (from, to) = name[open + 1..close]
        .split_once(':')
        .ok_or_else(|| format!("{name:?}: write a range as [01:20]"))?;
    let width = from.len();
    let bad = || format!("{name:?}: {from}:{to} is not a numeric range");
    let (a, b): (usize, usize) = (
        from.parse().map_err(|_| bad())?,
        to.parse().map_err(|_| bad())?,
    );
    if a > b {
        return Err(bad());
    }
    if b - a >= room {
        return Err(format!(
            "{name:?}: the range has {} hosts, more than the {MAX_HOSTS} an inventory may hold",
            (b - a).saturating_add(1)
        ));
    }
    let (head, tail) = (&name[..open], &name[close + 1..]);
    Ok((a..=b)
        .map(|i| format!("{head}{i:0width$}{tail}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let h = parse_host("debian@10.0.0.5:2222").unwrap();
        assert_eq!(
            h,
            HostSpec {
                user: Some("debian".into()),
                host: "10.0.0.5".into(),
                port: Some(2222)
            }
        );
        assert_eq!(parse_host("web-1").unwrap().port, None);
        assert_eq!(parse_host("[2001:db8::1]:22").unwrap().host, "2001:db8::1");
        assert_eq!(parse_host("root@2001:db8::1").unwrap().host, "2001:db8::1");
        assert!(parse_host("@x").is_err());
        assert!(parse_host("x:port").is_err());
        assert!(parse_host("[::1").is_err());
    }

    #[test]
    fn probe_defects_in_inventories() {
        let base = Path::new("/inv");
        // A range a digit too long is refused, named, at once.
        let e = Inventory::parse("[web]\nweb[1:99999999999]\n", "h.ini", base).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("more than the 1000000"), "{e}");
        // 100,000 hosts expand in linear time (quadratic took 22 s).
        let started = std::time::Instant::now();
        let big = "[web]\nweb[1:50000]\n[db]\ndb[1:50000]\n[all:children]\nweb\ndb\n";
        let inv = Inventory::parse(big, "h.ini", base).unwrap();
        assert_eq!(inv.hosts.len(), 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // A host variable's error names its line.
        let e =
            Inventory::parse("[web]\nweb1\nweb2 ansible_port=http\n", "h.ini", base).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        // A byte-order mark is not part of the first line.
        let inv = Inventory::parse("\u{feff}[web]\nweb[1:2]\n", "h.ini", base).unwrap();
        assert_eq!(inv.hosts.len(), 2);
        // An ungrouped range is an INI host range, not a host with a port.
        let inv = Inventory::parse("web[1:3]\n", "h.txt", base).unwrap();
        assert_eq!(inv.hosts.len(), 3);
        let inv = Inventory::parse("root@[::1]:22\n", "h.txt", base).unwrap();
        assert_eq!(inv.hosts[0].address, "::1");
        // A YAML inventory is named as such.
        let e = Inventory::parse("all:\n  hosts:\n    web1:\n", "h.yml", base).unwrap_err();
        assert!(e.message.contains("YAML inventory"), "{e}");
        // Limits that select nothing by mistake are refused.
        let inv = Inventory::parse("[web]\nweb1\n", "h.ini", base).unwrap();
        for bad in ["!", ":", ",,", "", "&", "web,,db"] {
            assert!(inv.limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_plain_list() {
        let inv = Inventory::parse(
            "# web\nroot@10.0.0.1\n10.0.0.2:2222  # second\n\n10.0.0.1\nroot@10.0.0.1\n[::1]\n",
            "hosts.txt",
            Path::new("/x"),
        )
        .unwrap();
        let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["root@10.0.0.1", "10.0.0.2:2222", "10.0.0.1", "[::1]"]
        );
        assert_eq!(inv.hosts[1].port, Some(2222));
        let err = Inventory::parse("ok\nx:y\n", "hosts.txt", Path::new("/")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().starts_with("hosts.txt:2: "), "{err}");
    }

    const INI: &str = "\
mail.example.com

[web]
web[1:3] ansible_user=debian
web9 ansible_host=10.0.0.9 ansible_port=2222 ansible_ssh_private_key_file=keys/web

[db]
db1 ansible_host=10.0.1.1 ansible_user=\"post gres\"

[web:vars]
ansible_user=ubuntu
http_port=80

[prod:children]
web
db

[all:vars]
ansible_port=22
";

    #[test]
    fn an_ansible_inventory() {
        let inv = Inventory::parse(INI, "hosts.ini", Path::new("/inv")).unwrap();
        let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["mail.example.com", "web1", "web2", "web3", "web9", "db1"]
        );
        let web1 = &inv.hosts[1];
        // Host variables win over group variables.
        assert_eq!(web1.user.as_deref(), Some("debian"));
        assert_eq!(web1.port, Some(22));
        assert!(web1.groups.contains("prod") && web1.groups.contains("web"));
        let web9 = &inv.hosts[4];
        assert_eq!((web9.address.as_str(), web9.port), ("10.0.0.9", Some(2222)));
        assert_eq!(web9.user.as_deref(), Some("ubuntu"));
        assert_eq!(web9.key_file.as_deref(), Some(Path::new("/inv/keys/web")));
        assert_eq!(inv.hosts[5].user.as_deref(), Some("post gres"));
        let pick = |p: &str| -> Vec<String> {
            inv.limit(p).unwrap().into_iter().map(|h| h.name).collect()
        };
        assert_eq!(pick("db"), ["db1"]);
        assert_eq!(pick("prod:!web[12]"), ["web3", "web9", "db1"]);
        assert_eq!(
            pick("web*,mail*"),
            ["mail.example.com", "web1", "web2", "web3", "web9"]
        );
        assert_eq!(pick("all:&db"), ["db1"]);
        assert_eq!(pick("nothing"), Vec::<String>::new());
        let err = Inventory::parse("[web:bogus]\n", "h.ini", Path::new("/")).unwrap_err();
        assert!(
            err.to_string()
                .contains("h.ini:1: unknown section kind :bogus"),
            "{err}"
        );
    }
}
