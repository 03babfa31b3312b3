//! The update rules both engines share: a write and a merge, from old versions to new.

use crate::{Siblings, StorageError, Write};

/// Applies a coordinated write to what is stored, enforcing the sibling cap.
pub(crate) fn apply_write(
    stored: Option<Siblings>,
    write: &Write<'_>,
) -> Result<Siblings, StorageError> {
    let mut siblings = stored.unwrap_or_default();
    siblings.update(write.context, write.value.clone(), write.actor);
    let count = siblings.sibling_count();
    if count > write.max_siblings {
        return Err(StorageError::TooManySiblings {
            siblings: count,
            max: write.max_siblings,
        });
    }
    Ok(siblings)
}

/// Syncs incoming versions into what is stored. Also says whether anything changed,
/// so engines can skip a redundant write.
pub(crate) fn apply_merge(stored: Option<Siblings>, incoming: &Siblings) -> (Siblings, bool) {
    match stored {
        None => (incoming.clone(), true),
        Some(mut siblings) => {
            let before = siblings.clone();
            siblings.sync(incoming);
            let changed = siblings != before;
            (siblings, changed)
        }
    }
}
