//! Finding an image, a size or a location by id or by name, the way people write them: an exact
//! id first, then a case-insensitive name; an ambiguous name lists the candidates with their ids,
//! an unknown one the closest matches. Provider-neutral: each driver hands in what it listed.

/// How many close matches an "unknown" message lists at most.
const CLOSE_MATCHES: usize = 5;

/// How many of what exists an "unknown" message lists when nothing is close.
const KNOWN_LISTED: usize = 10;

/// Names within this normalized Jaro-Winkler similarity of what was asked count as close.
const CLOSE_SIMILARITY: f64 = 0.75;

/// One thing that can be looked up: its id and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The provider's id.
    pub id: String,
    /// Its human name.
    pub name: String,
}

/// Why a lookup failed; the message lists what to choose from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Several have this name.
    #[error("{kind} {wanted:?} is ambiguous{scope}: {}; give the id", list(.candidates))]
    Ambiguous {
        /// image, size, location.
        kind: &'static str,
        /// What was asked for.
        wanted: String,
        /// Where it was looked for (` in region GRA11`), or empty.
        scope: String,
        /// Every candidate of that name.
        candidates: Vec<Candidate>,
    },
    /// None has this id or name.
    #[error("no {kind} {wanted:?}{scope}{}", suggest(.suggestions, *.close))]
    Unknown {
        /// image, size, location.
        kind: &'static str,
        /// What was asked for.
        wanted: String,
        /// Where it was looked for, or empty.
        scope: String,
        /// The closest names, best first; else the first few there are.
        suggestions: Vec<Candidate>,
        /// Whether `suggestions` are close matches (else simply some of what exists).
        close: bool,
    },
}

fn list(candidates: &[Candidate]) -> String {
    candidates
        .iter()
        .map(|c| {
            if c.id == c.name {
                c.id.clone()
            } else {
                format!("{} (id {})", c.name, c.id)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn suggest(candidates: &[Candidate], close: bool) -> String {
    match (candidates.is_empty(), close) {
        (true, _) => String::new(),
        (false, true) => format!("; did you mean {}?", list(candidates)),
        (false, false) => format!("; there are {}", list(candidates)),
    }
}

/// Finds `wanted` among `candidates` by exact id, else by case-insensitive name. `scope` says
/// where the candidates come from, for messages (` in region GRA11`, or empty).
///
/// # Errors
/// [`LookupError::Ambiguous`] when several share the name, [`LookupError::Unknown`] when none has
/// that id or name.
pub fn find<'a>(
    kind: &'static str,
    wanted: &str,
    scope: &str,
    candidates: &'a [Candidate],
) -> Result<&'a Candidate, LookupError> {
    if let Some(found) = candidates.iter().find(|c| c.id == wanted) {
        return Ok(found);
    }
    let named: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.name.eq_ignore_ascii_case(wanted))
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => {
            let close = closest(wanted, candidates);
            let suggestions = if close.is_empty() {
                candidates.iter().take(KNOWN_LISTED).cloned().collect()
            } else {
                close.clone()
            };
            Err(LookupError::Unknown {
                kind,
                wanted: wanted.into(),
                scope: scope.into(),
                close: !close.is_empty(),
                suggestions,
            })
        }
        many => Err(LookupError::Ambiguous {
            kind,
            wanted: wanted.into(),
            scope: scope.into(),
            candidates: many.iter().map(|c| (*c).clone()).collect(),
        }),
    }
}

/// The candidates whose name or id is closest to `wanted`, best first.
fn closest(wanted: &str, candidates: &[Candidate]) -> Vec<Candidate> {
    let wanted = wanted.to_ascii_lowercase();
    let mut scored: Vec<(f64, &Candidate)> = candidates
        .iter()
        .map(|c| {
            let score = [&c.name, &c.id]
                .iter()
                .map(|s| strsim::jaro_winkler(&wanted, &s.to_ascii_lowercase()))
                .fold(0.0, f64::max);
            (score, c)
        })
        .filter(|(score, _)| *score >= CLOSE_SIMILARITY)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut seen = Vec::new();
    for (_, c) in scored {
        if !seen.contains(c) {
            seen.push(c.clone());
        }
    }
    seen.truncate(CLOSE_MATCHES);
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, name: &str) -> Candidate {
        Candidate {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn ids_then_names_then_close_matches() {
        let all = [
            c("a1", "Debian 12"),
            c("b2", "Ubuntu 24.04"),
            c("c3", "debian 12"),
            c("d4", "Debian 11"),
        ];
        assert_eq!(find("image", "b2", "", &all).unwrap().id, "b2");
        assert_eq!(find("image", "UBUNTU 24.04", "", &all).unwrap().id, "b2");
        let ambiguous = find("image", "Debian 12", " in region GRA11", &all).unwrap_err();
        let text = ambiguous.to_string();
        assert!(text.contains("ambiguous in region GRA11"), "{text}");
        assert!(
            text.contains("Debian 12 (id a1)") && text.contains("debian 12 (id c3)"),
            "{text}"
        );
        let unknown = find("image", "Debian 13", "", &all)
            .unwrap_err()
            .to_string();
        assert!(
            unknown.starts_with("no image \"Debian 13\"; did you mean"),
            "{unknown}"
        );
        assert!(unknown.contains("Debian 11"), "{unknown}");
        let nothing_close = find("location", "MARS", "", &[c("GRA11", "GRA11")]).unwrap_err();
        assert_eq!(
            nothing_close.to_string(),
            "no location \"MARS\"; there are GRA11"
        );
    }
}
