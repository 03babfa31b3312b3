//! `Context`: the causal context a read returns and a write passes back, with a compact
//! text form (`n1:2,n2:1`) for command lines.

use std::fmt;
use std::str::FromStr;

use kv_proto::kvstore as api;
use thiserror::Error;

/// The causal context of a read: which writes (node id, counter) it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    entries: Vec<(String, u64)>,
}

/// A context string was not `node:counter[,node:counter...]`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid context {input:?}: expected node:counter[,node:counter...], e.g. n1:2,n2:1")]
pub struct ContextParseError {
    input: String,
}

impl Context {
    /// The entries, as (node id, counter).
    pub fn entries(&self) -> &[(String, u64)] {
        &self.entries
    }

    /// Whether the context is empty (a blind write).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn from_api(version: Option<&api::Version>) -> Self {
        let entries = version
            .map(|v| {
                v.entries
                    .iter()
                    .map(|e| (e.node_id.clone(), e.counter))
                    .collect()
            })
            .unwrap_or_default();
        Self { entries }
    }

    pub(crate) fn to_api(&self) -> api::Version {
        api::Version {
            entries: self
                .entries
                .iter()
                .map(|(node_id, counter)| api::VersionEntry {
                    node_id: node_id.clone(),
                    counter: *counter,
                })
                .collect(),
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (node, counter)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{node}:{counter}")?;
        }
        Ok(())
    }
}

impl FromStr for Context {
    type Err = ContextParseError;

    /// Parses `n1:2,n2:1`; the empty string is the empty context. The node validates the
    /// entries themselves (zero counters, repeats) and explains any problem.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ContextParseError {
            input: input.to_owned(),
        };
        let entries = input
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| {
                let (node, counter) = part.trim().rsplit_once(':').ok_or_else(error)?;
                let counter = counter.parse().map_err(|_| error())?;
                Ok((node.to_owned(), counter))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let context: Context = "n1:2,n2:1".parse().unwrap();
        assert_eq!(
            context.entries(),
            [("n1".to_owned(), 2), ("n2".to_owned(), 1)]
        );
        assert_eq!(context.to_string(), "n1:2,n2:1");
        assert!("".parse::<Context>().unwrap().is_empty());
        assert!("n1".parse::<Context>().is_err());
        assert!("n1:x".parse::<Context>().is_err());
    }
}
