//! The update rules both engines share: a write and a merge, from old versions to new.

use crate::{Siblings, StorageError, Update, Write};

/// Applies a coordinated write to what is stored, enforcing the sibling cap.
pub(crate) fn apply_write(
    stored: Option<Siblings>,
    write: &Write<'_>,
) -> Result<Update, StorageError> {
    let mut siblings = stored.clone().unwrap_or_default();
    siblings.update(write.context, write.value.clone(), write.actor);
    let count = siblings.sibling_count();
    if count > write.max_siblings {
        return Err(StorageError::TooManySiblings {
            siblings: count,
            max: write.max_siblings,
        });
    }
    Ok(Update {
        before: stored,
        after: siblings,
    })
}

/// Syncs incoming versions into what is stored; engines skip the write when
/// [`Update::changed`] says nothing changed.
pub(crate) fn apply_merge(stored: Option<Siblings>, incoming: &Siblings) -> Update {
    let after = match &stored {
        None => incoming.clone(),
        Some(siblings) => {
            let mut merged = siblings.clone();
            merged.sync(incoming);
            merged
        }
    };
    Update {
        before: stored,
        after,
    }
}
